"""Hydra config plumbing: a config node for every registered attention, and override checks.

`attention=NAME` works for every registered name, plugins included: for each attention without a
YAML preset in conf/attention/, a node `{name: NAME, <default hyperparameters>}` is added to the
ConfigStore. A YAML in conf/attention/ is only for presets and overrides.

`check_overrides` runs before Hydra starts anything: unknown names first, then every job of the run
or sweep composed and checked against cab/schema.py (`validate_overrides`). A problem is a
ChoiceError with a one-line message (the CLI prints it and exits 2). docs/configuration.md.
"""

from __future__ import annotations

import functools
import math
import re
from importlib import resources
from typing import Any, Iterable

from cab.patterns import Pattern
from cab.registry import LENGTH_HPARAM, ChoiceError, attention_spec, import_modules, list_attentions, list_tasks, task_spec

_PRIMITIVE = (int, float, str, bool, type(None))


def yaml_presets(group: str) -> set[str]:
    folder = resources.files("cab.conf").joinpath(group)
    if not folder.is_dir():
        return set()
    return {p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")}


def register_configs() -> None:
    """Add a ConfigStore node for every registered attention that has no YAML of its own."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    presets = yaml_presets("attention")
    registered = set(list_attentions())
    stored = store.repo.get("attention", {})
    for key in [k for k in stored if k.endswith(".yaml") and k[: -len(".yaml")] not in registered]:
        del stored[key]  # an attention unregistered since its node was stored (tests add and remove their own)
    for name in sorted(registered):
        if name in presets:
            continue
        defaults = {k: v for k, v in attention_spec(name).default_hparams().items() if isinstance(v, _PRIMITIVE)}
        if LENGTH_HPARAM in defaults:
            defaults[LENGTH_HPARAM] = None  # null: the task's longest key length (cab.run.factory.AttentionFactory)
        store.store(group="attention", name=name, node={"name": name, **defaults})


_IMPORTS = re.compile(r"^\+{0,2}imports=\[?(?P<mods>[^\]]*)\]?$")


def preimport(args: Iterable[str]) -> None:
    """Import the user modules named by an `imports=[...]` override before Hydra composes, so their
    attentions have config nodes."""
    for arg in args:
        match = _IMPORTS.match(arg)
        if match:
            import_modules(m.strip() for m in match.group("mods").split(",") if m.strip())


def _sweep_values(value: str) -> list[str] | None:
    """Plain comma-separated choices of an override value; None for glob()/range() and the like."""
    if "(" in value or "$" in value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_names(chosen: dict[str, list[str]]) -> None:
    presets = yaml_presets("attention")
    for name in chosen.get("attention", []):
        if name not in presets:
            attention_spec(name)
    for name in chosen.get("task", []):
        task_spec(name)
    for name in chosen.get("pattern", []):
        try:
            Pattern.parse(name)
        except ValueError as exc:
            raise ChoiceError(str(exc)) from None


def check_overrides(args: Iterable[str], multirun: bool, app: str = "run") -> None:
    """One-line errors (ChoiceError) for unknown attentions, tasks and patterns, and, for a single
    run, a pattern the task does not exercise. Runs before Hydra so the message is ours. Then every
    value of every job of the run or sweep is checked against its schema (`validate_overrides`)."""
    args = list(args)
    chosen: dict[str, list[str]] = {}
    for arg in args:
        if "=" not in arg or arg.startswith(("hydra", "+hydra", "~")):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+")
        if key in ("attention", "task", "pattern"):
            values = _sweep_values(value)
            if values is not None:
                chosen[key] = values
    _check_names(chosen)
    if not multirun and app == "run":
        from cab.run.runner import check_cell

        tasks = chosen.get("task", ["mqar"])
        patterns = chosen.get("pattern", ["causal_self"])
        if len(tasks) == 1 and len(patterns) == 1:
            check_cell("softmax", tasks[0], patterns[0])
    validate_overrides(args, app)


# ---------------------------------------------------------------------------------------------
# every job's config checked before the first starts


def writable_dir_problem(path: str) -> str | None:
    """Why a directory cannot be created and written at `path` (None: it can). Nothing is left
    behind: a temporary directory is made and removed in the deepest existing ancestor."""
    import os

    if not str(path).strip():
        return "empty path"
    return _writable_problem(os.path.abspath(os.path.expanduser(str(path))))


@functools.lru_cache(maxsize=256)
def _writable_problem(absolute: str) -> str | None:
    import os
    import tempfile
    from pathlib import Path

    target = Path(absolute)
    existing = target
    while not existing.exists():
        if existing.parent == existing:
            return f"no existing ancestor of {target}"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cab-write-test-", dir=existing))
    except OSError as exc:
        return f"cannot write in {existing}: {exc.strerror or exc}"
    return None


# A sweep over these groups is checked one value at a time (their config nodes set nothing that
# another group reads); sweeps over other groups (task × trainer: task_scale) are crossed.
INDEPENDENT_GROUPS = ("attention", "pattern")
# Crossing the values of swept plain keys (seed, trainer.lr, ...) in every composed config costs
# about a millisecond a combination: up to this many in all, else each value is checked alone.
COMBINATION_BUDGET = 256
LAST_CHECK: dict[str, int] = {}  # what the last validate_overrides did: compositions, job configs checked


def validate_overrides(args: list[str], app: str = "run") -> None:
    """Check every job of `cab run` / `cab bench` (a single run, or every job of a multirun, the
    experiment's `hydra.sweeper.params` included) against cab.schema before Hydra starts anything:
    ConfigError (a ChoiceError: one line, exit 2) on the first bad value.

    The configs are composed with Hydra's own machinery (its override parser expands comma lists,
    range(), choice() and glob(); its defaults lists and merges compose), from one cache of loaded
    files and without Hydra's own config groups, so each composition costs milliseconds: one per
    combination of swept groups other than attention and pattern, one per other value of those. In
    each, every value of every swept plain key is checked (crossed where COMBINATION_BUDGET allows)."""
    import contextlib
    import io

    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            parsed = get_args_parser().parse_args(list(args))
    except SystemExit:
        return  # a malformed Hydra flag: Hydra reports it
    if parsed.help or parsed.hydra_help or parsed.cfg or parsed.info or parsed.shell_completion or parsed.config_path:
        return  # nothing runs (or a config tree of the user's own)
    try:
        preflight = _Preflight(parsed.config_name or ("bench" if app == "bench" else "config"), parsed.config_dir, app)
        preflight.check(parsed.overrides, bool(parsed.multirun))
        LAST_CHECK.update(composed=preflight.composed, checked=preflight.checked)
    except ChoiceError:
        raise
    except Exception as exc:  # noqa: BLE001 - a fault of the checks themselves must not block a run
        import sys

        print(f"cab: warning: the config checks could not run ({type(exc).__name__}: {exc}); "
              "starting without them", file=sys.stderr)


class _Preflight:
    """The configs of one command's jobs, composed from one cache, and their checks."""

    def __init__(self, config_name: str, config_dir: str | None, app: str):
        import os

        from hydra import version
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.config_repository import CachingConfigRepository
        from hydra._internal.utils import create_config_search_path
        from hydra.core.config_search_path import SearchPathQuery

        class _Repository(CachingConfigRepository):
            """Loads each config once; drops `override /hydra/...` from a defaults list, since the
            checked configs leave Hydra's own groups out (their composition is most of the cost)."""

            def load_config(self, config_path):
                key = f"cab:{config_path}"
                if key not in self.cache:
                    import copy

                    ret = super().load_config(config_path)
                    if ret is not None and ret.defaults_list:
                        kept = [d for d in ret.defaults_list
                                if not (getattr(d, "override", False)
                                        and str(getattr(d, "group", "")).lstrip("/").split("/")[0] == "hydra")]
                        if len(kept) != len(ret.defaults_list):
                            ret = copy.copy(ret)
                            ret.defaults_list = kept
                    self.cache[key] = ret
                return self.cache[key]

        version.setbase("1.3")
        search_path = create_config_search_path("pkg://cab.conf")
        if config_dir:
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(config_dir)}",
                                anchor=SearchPathQuery(provider="schema"))
        self.loader = ConfigLoaderImpl(config_search_path=search_path)
        self.repo = _Repository(self.loader.repository)
        self.loader._process_config_searchpath(config_name, [], self.repo)
        self.config_name = config_name
        self.app = app
        self.frames: dict[tuple, tuple[dict, dict, list]] = {}
        self.composed = 0  # compositions (the costly step), for tests and timings
        self.checked = 0  # job configs checked

    # -- overrides ----------------------------------------------------------------------------
    def parse(self, lines: list[str]) -> list:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import OverrideParseException

        try:
            return OverridesParser.create(config_loader=self.loader).parse_overrides(lines)
        except OverrideParseException as exc:
            raise ChoiceError(f"cannot parse override {exc.override!r}: {str(exc.message).splitlines()[0]}") from None

    def is_group(self, override) -> bool:
        return self.repo.group_exists(override.key_or_group)

    @staticmethod
    def values(override) -> list[str]:
        """The values an override takes in a sweep, as strings (_Skip: a sweep Hydra's basic sweeper
        cannot run, e.g. interval(); Hydra reports it)."""
        if not override.is_sweep_override():
            if override.is_delete() and override.value() is None:
                return [""]
            return [override.get_value_element_as_str()]
        if not override.is_discrete_sweep():
            raise _Skip()
        return list(override.sweep_string_iterator())

    def effective(self, overrides: list, multirun: bool) -> dict[str, tuple[Any, list[str]]]:
        """key -> (override, values): the command line's overrides and, in a multirun, the
        experiment's `hydra.sweeper.params` (the command line wins a key, as in Hydra's sweeper)."""
        out = {o.get_key_element(): (o, self.values(o)) for o in overrides}
        if multirun:
            _, hydra_node, _ = self.frame({k: v[0] for k, (o, v) in out.items() if self.is_group(o)})
            params = (hydra_node.get("sweeper") or {}).get("params") or {}
            if params:
                merged = {o.get_key_element(): (o, self.values(o))
                          for o in self.parse([f"{k}={v}" for k, v in params.items()])}
                merged.update(out)
                out = merged
        return out

    # -- composition --------------------------------------------------------------------------
    def frame(self, groups: dict[str, str]) -> tuple[dict, dict, list]:
        """(config, its `hydra` node, defaults list) composed from these group choices, before any
        plain-key override, as plain containers (unresolved); cached."""
        key = tuple(sorted(groups.items()))
        if key not in self.frames:
            from hydra._internal.defaults_list import create_defaults_list
            from hydra.errors import ConfigCompositionException, MissingConfigException
            from omegaconf import OmegaConf

            lines = [f"{k}={v}" for k, v in groups.items()]
            try:
                defaults = create_defaults_list(repo=self.repo, config_name=self.config_name,
                                                overrides_list=self.parse(lines), prepend_hydra=False,
                                                skip_missing=False).defaults
                cfg = OmegaConf.to_container(self.loader._compose_config_from_defaults_list(defaults, self.repo))
            except MissingConfigException as exc:
                group, _, option = str(exc.missing_cfg_file or "").rpartition("/")
                if group and option:
                    raise ChoiceError(f"{group}={option}: no such {group} config; "
                                      f"valid: {', '.join(exc.options or [])}") from None
                raise ChoiceError(" ".join(str(exc).split())) from None
            except ConfigCompositionException as exc:
                raise ChoiceError(" ".join(str(exc).split())) from None
            hydra_node = cfg.pop("hydra", None) or {}
            self.frames[key] = (cfg, hydra_node, defaults)
            self.composed += 1
        return self.frames[key]

    def swapped(self, base: dict[str, str], group_key: str, option: str) -> tuple[dict, dict, list]:
        """The frame of `base` with `group_key` set to `option`. For a group whose config sets whole
        top-level nodes that nothing later in the defaults list touches (an attention, a pattern),
        the node is swapped for the option's own instead of composing again; else composed."""
        choice = {**base, group_key: option}
        key = tuple(sorted(choice.items()))
        if key in self.frames:
            return self.frames[key]
        import dataclasses

        from omegaconf import OmegaConf

        cfg, hydra_node, defaults = self.frame(base)
        group = group_key.lstrip("+")
        entry = next((d for d in defaults if d.config_path == f"{group}/{base[group_key]}"), None)
        try:
            if entry is None or not self.repo.config_exists(f"{group}/{option}"):
                raise LookupError
            old = self.loader._load_single_config(entry, self.repo)
            new = self.loader._load_single_config(dataclasses.replace(entry, config_path=f"{group}/{option}"),
                                                  self.repo)
            if any(not d.is_self() for r in (old, new) for d in (r.defaults_list or [])
                   if hasattr(d, "is_self")):
                raise LookupError  # options with defaults lists of their own
            old_c, new_c = (OmegaConf.to_container(r.config, resolve=False) for r in (old, new))
            if set(old_c) != set(new_c) or any(cfg.get(k) != v for k, v in old_c.items()):
                raise LookupError  # something else sets keys in these nodes
        except LookupError:
            return self.frame(choice)
        self.frames[key] = ({**cfg, **new_c}, hydra_node, defaults)
        return self.frames[key]

    def job_config(self, frame: dict, plain: list) -> dict:
        """One job's resolved config: the frame with the plain overrides applied as Hydra applies
        them (after the defaults list, struct mode on); an unknown key is named with the valid ones."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import ConfigCompositionException
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        cfg = OmegaConf.create(frame)
        OmegaConf.set_struct(cfg, True)
        for o in plain:
            if not (o.is_add() or o.is_force_add() or o.is_delete()):
                if OmegaConf.select(cfg, o.key_or_group, default=_ABSENT, throw_on_missing=False) is _ABSENT:
                    from cab.schema import unknown_key_message

                    raise ChoiceError(unknown_key_message(o.key_or_group, o.get_value_element_as_str(), frame))
            try:
                ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
            except ConfigCompositionException as exc:
                cause = exc.__cause__ or exc
                raise ChoiceError(f"{o.input_line}: {' '.join(str(cause).split())}") from None
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", None) or "?"
            raise ChoiceError(f"{key}: cannot resolve: {' '.join(str(exc).splitlines()[0].split())}") from None

    # -- checking -----------------------------------------------------------------------------
    def check(self, lines: list[str], multirun: bool) -> None:
        import itertools

        overrides = self.parse(lines)
        launcher_overrides = [o for o in overrides if o.key_or_group.startswith("hydra.launcher.")]
        app_overrides = [o for o in overrides if not o.is_hydra_override()]
        sweep = next((o for o in app_overrides + launcher_overrides if o.is_sweep_override()), None)
        if sweep is not None and not multirun:
            as_list = "" if self.is_group(sweep) else f"; a list is written {sweep.get_key_element()}=[...]"
            raise ChoiceError(f"{sweep.input_line}: a sweep runs with -m (cab {self.app} -m ...){as_list}")
        try:
            effective = self.effective(app_overrides, multirun)
            launcher_values = [(o, self.values(o)) for o in launcher_overrides]
        except _Skip:
            return
        groups = {k: v for k, (o, v) in effective.items() if self.is_group(o)}
        plain = {k: (o, v) for k, (o, v) in effective.items() if not self.is_group(o)}
        _check_names({k.lstrip("+"): v for k, v in groups.items() if k.lstrip("+") in ("attention", "task", "pattern")})

        # the group choices: other groups crossed, attention and pattern one value at a time
        base = {k: v[0] for k, v in groups.items()}
        crossed = [k for k, v in groups.items() if len(v) > 1 and k.lstrip("+") not in INDEPENDENT_GROUPS]
        choices = [({**base, **dict(zip(crossed, combo))}, None)
                   for combo in itertools.product(*(groups[k] for k in crossed))]
        for k, v in groups.items():
            if len(v) > 1 and k.lstrip("+") in INDEPENDENT_GROUPS:
                choices += [(base, (k, value)) for value in v[1:]]

        # the plain overrides of each job: the first value of every key, then every other value,
        # crossed where the budget allows
        first = {k: self.parse([_line(o, v[0])])[0] for k, (o, v) in plain.items()}
        swept = {k: self.parse([_line(o, value) for value in v[1:]]) for k, (o, v) in plain.items() if len(v) > 1}
        variations: list[dict[str, Any]] = [{}]
        if swept:
            if math.prod(len(v) + 1 for v in swept.values()) * len(choices) <= COMBINATION_BUDGET:
                for combo in itertools.product(*([None, *v] for v in swept.values())):
                    if any(c is not None for c in combo):
                        variations.append({k: c for k, c in zip(swept, combo) if c is not None})
            else:
                variations += [{k: o} for k, v in swept.items() for o in v]

        from cab import schema

        given = {k.lstrip("+~") for k in plain}  # keys set on the command line or by the sweep
        validate = schema.validate_bench if self.app == "bench" else schema.validate_run
        first_list = list(first.values())
        resolved: dict[tuple, dict] = {}

        def job_of(choice: dict[str, str], swap: tuple | None, overrides: list) -> dict:
            """A job's resolved config. Composing and resolving costs milliseconds, so a job that
            differs from one already resolved only by plain values no interpolation reads, or by a
            swapped attention/pattern node, is that config patched."""
            key = (tuple(sorted(choice.items())), swap, tuple(o.input_line for o in overrides))
            if key in resolved:
                return resolved[key]
            frame = None
            if overrides != first_list:  # a variation: patch this choice's first job
                changed = [o for o, f in zip(overrides, first_list) if o is not f]
                base_job = job_of(choice, swap, first_list)
                frame = self.swapped(choice, *swap)[0] if swap else self.frame(choice)[0]
                job = _patched(base_job, changed, _interpolations(frame))
            elif swap:  # another attention or pattern: swap its node into the base choice's first job
                base_frame = self.frame(choice)[0]
                frame = self.swapped(choice, *swap)[0]
                swapped_keys = [k for k in frame if frame[k] is not base_frame.get(k)]
                safe = (not _interpolations({k: frame[k] for k in swapped_keys})
                        and not any(o.key_or_group.split(".")[0] in swapped_keys for o in overrides)
                        and not any(k in text for k in swapped_keys for text in _interpolations(base_frame)))
                job = {**job_of(choice, None, first_list), **{k: frame[k] for k in swapped_keys}} if safe else None
            else:
                job = None
            if job is None:
                if frame is None:
                    frame = self.swapped(choice, *swap)[0] if swap else self.frame(choice)[0]
                job = self.job_config(frame, overrides)
            resolved[key] = job
            return job

        for launcher in _launcher_variants(launcher_values):
            for choice, swap in choices:
                hydra_node = (self.swapped(choice, *swap) if swap else self.frame(choice))[1]
                job = {**choice, **dict([swap])} if swap else choice
                where = "".join(f" {k.lstrip('+')}={v}" for k, v in job.items() if k in crossed or v != base[k])
                node = {**(hydra_node.get("launcher") or {}), **launcher}
                self.report(lambda: schema.validate_launcher(node), job, "")
                for variation in variations:
                    overrides = [variation.get(k, o) for k, o in first.items()]
                    self.report(lambda: validate(job_of(choice, swap, overrides)), job, where, given)
                    self.checked += 1

    @staticmethod
    def report(check, groups: dict[str, str], where: str, given: set[str] = frozenset()) -> None:
        """Run one check; a problem's message names the swept group values of its jobs, unless the
        message names them already or the bad value was given as such (`seed=-1` is bad in every job)."""
        try:
            check()
        except ChoiceError as exc:
            if re.match(r"[^=:( ]*", str(exc)).group(0) in given:
                raise
            for k, v in groups.items():
                g = k.lstrip("+")
                if g in ("attention", "task") and f"{g} {v}" in str(exc):
                    where = where.replace(f" {g}={v}", "")
            if where:
                raise type(exc)(f"{exc} (in the jobs with{where})") from None
            raise


def _interpolations(node: Any) -> list[str]:
    """The strings of a config tree that interpolate (`${...}`)."""
    if isinstance(node, dict):
        return [t for v in node.values() for t in _interpolations(v)]
    if isinstance(node, list):
        return [t for v in node for t in _interpolations(v)]
    return [node] if isinstance(node, str) and "${" in node else []


def _patched(job: dict, overrides: list, interpolations: list[str]) -> dict | None:
    """`job` with plain `key=value` overrides set, where that is what Hydra would compose: no
    +/++/~, no mapping (Hydra merges those) or interpolation as the value, an existing key outside
    lists, and no interpolation in the config that could read the key. None: compose it instead."""
    out = dict(job)
    for o in overrides:
        if o.is_add() or o.is_force_add() or o.is_delete():
            return None
        value = o.value()
        if isinstance(value, dict) or _interpolations(value):
            return None
        path = o.key_or_group.split(".")
        if any(part.isdigit() for part in path) or any(path[-1] in t or path[0] in t for t in interpolations):
            return None
        node = out
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                return None
            node[part] = dict(node[part])
            node = node[part]
        if path[-1] not in node or isinstance(node[path[-1]], dict):
            return None
        node[path[-1]] = value
    return out


def _launcher_variants(launcher_values: list) -> list[dict[str, Any]]:
    """The `hydra.launcher.*` values set on the command line: the first of each, then each other."""
    first = {o.key_or_group[len("hydra.launcher."):]: _value(o, v[0]) for o, v in launcher_values}
    out = [first]
    for o, values in launcher_values:
        for value in values[1:]:
            out.append({**first, o.key_or_group[len("hydra.launcher."):]: _value(o, value)})
    return out


def _value(override, text: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"{override.key_or_group}={text}").value()


class _Skip(Exception):
    """A sweep the checks cannot expand; Hydra runs (and reports) it as before."""


_ABSENT = object()


def _line(override, value: str) -> str:
    """An override line for one value of a (possibly swept) override."""
    if override.is_delete():
        return override.input_line
    return f"{override.get_key_element()}={value}"


def all_names() -> dict[str, list[str]]:
    return {"attentions": list_attentions(), "tasks": list_tasks()}
