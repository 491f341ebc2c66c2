"""`cab list`: attentions with their pattern support (and decode form), tasks with the patterns they exercise."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cab.patterns import Pattern
from cab.registry import attention_spec, list_attentions, list_tasks, task_spec


def print_listing(console: Console | None = None) -> None:
    console = console or Console()
    patterns = list(Pattern)
    table = Table(title="attentions (✓ supported; ✗ with the reason in `cab list` below; decode: token-by-token "
                        "generation, docs/decode.md)")
    table.add_column("attention", style="bold")
    for p in patterns:
        table.add_column(p.value, justify="center")
    table.add_column("decode", justify="center")
    reasons = []
    for name in list_attentions():
        spec = attention_spec(name)
        causal = Pattern.CAUSAL_SELF in spec.patterns
        decode = "✓" if causal and spec.cls.declares_decode() else ("✗" if causal else "–")
        table.add_row(name, *("✓" if p in spec.patterns else "✗" for p in patterns), decode)
        reasons += [(name, p.value, spec.unsupported[p]) for p in patterns if p in spec.unsupported]
        if decode == "✗":
            reasons.append((name, "decode", spec.cls.decode_unsupported or "declares no decode form"))
    console.print(table)
    tasks = Table(title="tasks (✓ = pattern exercised)")
    tasks.add_column("task", style="bold")
    for p in patterns:
        tasks.add_column(p.value, justify="center")
    tasks.add_column("description")
    for name in list_tasks():
        spec = task_spec(name)
        tasks.add_row(name, *("✓" if p in spec.patterns else "" for p in patterns), spec.description)
    console.print(tasks)
    if reasons:
        why = Table(title="unsupported patterns and why")
        for col in ("attention", "pattern", "reason"):
            why.add_column(col)
        for row in reasons:
            why.add_row(*row)
        console.print(why)
