"""Hydra config plumbing: a config node for every registered attention, and override checks.

`attention=NAME` works for every registered name, plugins included: for each attention without a
YAML preset in conf/attention/, a node `{name: NAME, <default hyperparameters>}` is added to the
ConfigStore. A YAML in conf/attention/ is only for presets and overrides.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Iterable

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
    for name in list_attentions():
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


def check_overrides(args: Iterable[str], multirun: bool) -> None:
    """One-line errors (ChoiceError) for unknown attentions, tasks and patterns, and, for a single
    run, a pattern the task does not exercise. Runs before Hydra so the message is ours."""
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
    if not multirun:
        from cab.run.runner import check_cell

        tasks = chosen.get("task", ["mqar"])
        patterns = chosen.get("pattern", ["causal_self"])
        if len(tasks) == 1 and len(patterns) == 1:
            check_cell("softmax", tasks[0], patterns[0])


def all_names() -> dict[str, list[str]]:
    return {"attentions": list_attentions(), "tasks": list_tasks()}
