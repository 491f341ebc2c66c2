"""Name -> class registries for attentions and tasks (the timm / torchtitan pattern).

The harness never imports a mechanism by name: it asks these registries, which are filled by
`@register_attention` / `@register_task` decorators when the modules are imported. Modules come
from three places, loaded lazily on first lookup:
  1. the built-in folders `cab.attentions` and `cab.tasks` (every module in them);
  2. installed packages, through the entry-point groups `cab.attentions` and `cab.tasks`
     (each entry point names a module; loading it runs its decorators);
  3. user modules named at run time (`imports=[my_module]` in the config), via `import_modules`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from cab.patterns import ALL_PATTERNS, Pattern


class ChoiceError(ValueError):
    """A bad name or pattern; its message is one line that lists the valid choices."""


class ParamError(ValueError):
    """A bad config value for one key, raised by a schema's check (`Task.check_params`, cab/schema.py)
    before any job starts: `ParamError("seq_len", "must be even")`."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


# What kind of mechanism an attention is (`@register_attention(..., family=...)`), with the one line
# the leaderboard's mechanism pages show for it. The families follow how the surveys behind CAB and
# Zoology group efficient attentions: by what replaces the full softmax over every key.
FAMILIES = {
    "exact": "every query attends to every key under one exact softmax",
    "sparse": "each query attends to a subset of keys fixed by position (windows, blocks, strides)",
    "routed": "the keys, blocks or heads each query uses are chosen from the content (hashing, routing, top-k)",
    "linear": "a kernel or feature map replaces the softmax, so attention is a running sum: a fixed-size recurrent state",
    "low-rank": "keys and values (or queries) pass through a few summary tokens: projections, landmarks, agents, latents, slots",
    "state-space": "a learned linear recurrence (a state-space model) mixes the sequence instead of query-key scores",
    "attention-free": "tokens are mixed without query-key scores: convolutions, gates, re-weighting",
    "other": "none of the above",
}


@dataclass(frozen=True)
class Paper:
    """The paper a mechanism comes from, as its mechanism page cites it. `url` is the arXiv or
    proceedings page, or "" where none is known (never a guess)."""

    title: str
    authors: str = ""
    venue: str = ""
    year: int | None = None
    url: str = ""

    @classmethod
    def parse(cls, value: "Paper | dict[str, Any] | None", who: str) -> "Paper | None":
        """A Paper from the decorator's `paper=` (a Paper or a dict with its fields); a bad one is a
        one-line error naming the valid keys."""
        if value is None or isinstance(value, Paper):
            return value
        fields = ("title", "authors", "venue", "year", "url")
        if not isinstance(value, dict) or not isinstance(value.get("title"), str) or not value["title"]:
            raise ValueError(f"{who}: paper must be a dict with a non-empty 'title' (keys: {', '.join(fields)})")
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValueError(f"{who}: unknown paper key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
        year, url = value.get("year"), value.get("url") or ""
        if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
            raise ValueError(f"{who}: paper year must be an integer, got {year!r}")
        if not isinstance(url, str) or (url and not url.startswith("https://")):
            raise ValueError(f"{who}: paper url must be an https:// address or empty, got {url!r}")
        return cls(value["title"], str(value.get("authors") or ""), str(value.get("venue") or ""), year, url)

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "authors": self.authors, "venue": self.venue, "year": self.year, "url": self.url}


@dataclass(frozen=True)
class AttentionSpec:
    name: str
    cls: type
    patterns: frozenset[Pattern]
    unsupported: dict[Pattern, str]  # pattern -> one-line reason, for every pattern not supported
    module: str
    family: str | None = None  # a key of FAMILIES, or None where the attention does not say
    paper: Paper | None = None

    def default_hparams(self) -> dict[str, Any]:
        """Keyword defaults of the class's __init__ beyond (dim, num_heads, pattern)."""
        return _keyword_defaults(self.cls, skip={"dim", "num_heads", "pattern"})

    def docstring(self) -> str:
        """The mechanism's own description: its module's docstring (built-ins start it with the paper
        line), else the class's."""
        module = sys.modules.get(self.module)
        return inspect.cleandoc((module.__doc__ if module is not None else None) or self.cls.__doc__ or "")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    cls: type
    patterns: frozenset[Pattern]
    module: str
    description: str = ""


@dataclass
class _Registry:
    kind: str  # "attention" or "task"
    package: str  # built-in package scanned on first lookup
    entry_point_group: str
    entries: dict[str, Any] = field(default_factory=dict)
    loaded: bool = False

    def add(self, name: str, spec: Any) -> None:
        if name in self.entries:
            other = self.entries[name]
            raise ValueError(f"{self.kind} {name!r} is already registered (by {other.module}.{other.cls.__name__})")
        self.entries[name] = spec

    def load(self) -> None:
        if self.loaded:
            return
        self.loaded = True  # set first: modules being imported may look things up
        package = importlib.import_module(self.package)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        from importlib.metadata import entry_points

        for ep in entry_points(group=self.entry_point_group):
            importlib.import_module(ep.value.split(":")[0])

    def get(self, name: str) -> Any:
        self.load()
        if name not in self.entries:
            raise ChoiceError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self.entries))}")
        return self.entries[name]


_ATTENTIONS = _Registry("attention", "cab.attentions", "cab.attentions")
_TASKS = _Registry("task", "cab.tasks", "cab.tasks")


def _keyword_defaults(cls: type, skip: set[str]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name != "self" and p.name not in skip and p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _parse_patterns(patterns: Iterable[Pattern | str]) -> frozenset[Pattern]:
    parsed = frozenset(Pattern.parse(p) for p in patterns)
    if not parsed:
        raise ValueError("an attention or task must support at least one pattern")
    return parsed


# ---------------------------------------------------------------------------------------------
# attentions


def register_attention(
    name: str,
    patterns: Iterable[Pattern | str],
    unsupported: dict[Pattern | str, str] | None = None,
    *,
    family: str | None = None,
    paper: Paper | dict[str, Any] | None = None,
) -> Callable[[type], type]:
    """Class decorator: register an attention layer under `name`.

    `patterns` are the patterns it supports; `unsupported` gives a one-line reason for each of the
    others (shown by `cab list` and on the leaderboard). A missing reason is an error, so the
    leaderboard never shows an unexplained gap.

    Optional, for the leaderboard's mechanism page: `family` (a key of `FAMILIES`) and `paper`
    (`{"title", "authors", "venue", "year", "url"}`, or a `Paper`). Without them the page shows the
    attention's docstring alone.
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"attention {name!r}: unknown family {family!r}; valid families: {', '.join(FAMILIES)}")
    cited = Paper.parse(paper, f"attention {name!r}")
    supported = _parse_patterns(patterns)
    reasons = {Pattern.parse(p): str(r) for p, r in (unsupported or {}).items()}
    missing = sorted(p.value for p in ALL_PATTERNS - supported - reasons.keys())
    if missing:
        raise ValueError(f"attention {name!r}: give a reason for each unsupported pattern (missing: {', '.join(missing)})")
    both = sorted(p.value for p in supported & reasons.keys())
    if both:
        raise ValueError(f"attention {name!r}: patterns both supported and unsupported: {', '.join(both)}")

    def decorator(cls: type) -> type:
        _ATTENTIONS.add(name, AttentionSpec(name, cls, supported, reasons, cls.__module__, family, cited))
        cls.attention_name = name
        return cls

    return decorator


# A hyperparameter of this name bounds the sequence length an attention is defined for (Linformer's
# E and F, cosFormer's causal M). In a run it defaults to the task's longest key length
# (cab.run.factory.AttentionFactory); built directly, the class default applies.
LENGTH_HPARAM = "max_len"


def with_length_bound(name: str, hparams: dict[str, Any], max_len: int | None) -> dict[str, Any]:
    """`hparams` with LENGTH_HPARAM set to `max_len` where attention `name` takes one and the config
    left it unset or null; with no `max_len` known, a null is dropped so the class default applies."""
    hparams = dict(hparams)
    if hparams.get(LENGTH_HPARAM) is None and LENGTH_HPARAM in attention_spec(name).default_hparams():
        if max_len:
            hparams[LENGTH_HPARAM] = int(max_len)
        else:
            hparams.pop(LENGTH_HPARAM, None)
    return hparams


def attention_spec(name: str) -> AttentionSpec:
    return _ATTENTIONS.get(name)


def list_attentions(pattern: Pattern | str | None = None) -> list[str]:
    """Sorted names of registered attentions, optionally only those supporting `pattern`."""
    _ATTENTIONS.load()
    if pattern is None:
        return sorted(_ATTENTIONS.entries)
    wanted = Pattern.parse(pattern)
    return sorted(n for n, s in _ATTENTIONS.entries.items() if wanted in s.patterns)


class UnsupportedPatternError(ChoiceError):
    """The attention exists but does not support the requested pattern."""


class UnsupportedConfigError(ChoiceError):
    """The attention cannot be built at this size or with these hyperparameters (e.g. MoH, which routes among
    heads, in a one-head model). Raised by a layer's constructor; `cab run` records the cell as `unsupported`
    with the message as its reason, as for an unsupported pattern."""


def check_supported(name: str, pattern: Pattern | str) -> AttentionSpec:
    spec = attention_spec(name)
    pattern = Pattern.parse(pattern)
    if pattern not in spec.patterns:
        valid = ", ".join(sorted(p.value for p in spec.patterns))
        raise UnsupportedPatternError(
            f"attention {name!r} does not support {pattern.value} ({spec.unsupported[pattern]}); it supports: {valid}"
        )
    return spec


def build_attention(name: str, dim: int, num_heads: int, pattern: Pattern | str, **hparams: Any):
    """Instantiate a registered attention layer for one pattern."""
    spec = check_supported(name, pattern)
    known = spec.default_hparams()
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(spec.cls.__init__).parameters.values())
    unknown = sorted(set(hparams) - set(known))
    if unknown and not accepts_any:
        raise ChoiceError(
            f"attention {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(known)) or '(none)'}"
        )
    return spec.cls(dim=dim, num_heads=num_heads, pattern=Pattern.parse(pattern), **hparams)


# ---------------------------------------------------------------------------------------------
# tasks


def register_task(name: str, patterns: Iterable[Pattern | str], description: str = "") -> Callable[[type], type]:
    """Class decorator: register a task and the patterns its models exercise."""
    exercised = _parse_patterns(patterns)

    def decorator(cls: type) -> type:
        doc = description or (inspect.getdoc(cls) or "").split("\n")[0]
        _TASKS.add(name, TaskSpec(name, cls, exercised, cls.__module__, doc))
        cls.task_name = name
        return cls

    return decorator


def task_spec(name: str) -> TaskSpec:
    return _TASKS.get(name)


def list_tasks(pattern: Pattern | str | None = None) -> list[str]:
    _TASKS.load()
    if pattern is None:
        return sorted(_TASKS.entries)
    wanted = Pattern.parse(pattern)
    return sorted(n for n, s in _TASKS.entries.items() if wanted in s.patterns)


def import_modules(modules: Iterable[str]) -> None:
    """Import user modules so their decorators run: dotted names (the working directory is searched
    too, as `python -m` does) or paths to .py files."""
    import os
    import sys
    from pathlib import Path

    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        module = str(module)
        try:
            if module.endswith(".py"):
                path = Path(module).resolve()
                name = f"cab_user_{path.stem}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise ImportError(f"no such file {path}")
                loaded = importlib.util.module_from_spec(spec)
                sys.modules[name] = loaded
                spec.loader.exec_module(loaded)
            else:
                importlib.import_module(module)
        except ImportError as exc:
            raise ChoiceError(f"cannot import module {module!r} named in `imports`: {exc}") from None
