"""cab: a benchmark harness and static leaderboard for attention mechanisms.

Public API (see docs/adding-an-attention.md):

    from cab import Pattern, register_attention, build_attention, list_attentions
    from cab import MultiHeadAttention, AttentionLayer          # base classes (import torch)
    from cab import Task, register_task, list_tasks              # tasks
"""

from cab.patterns import Pattern
from cab.registry import (
    ChoiceError,
    UnsupportedConfigError,
    UnsupportedPatternError,
    attention_spec,
    build_attention,
    list_attentions,
    list_tasks,
    register_attention,
    register_task,
    task_spec,
)

__version__ = "0.1.0"

# Names that need torch load on first use, so `cab --help` stays fast.
_LAZY = {
    "AttentionLayer": "cab.attention",
    "MultiHeadAttention": "cab.attention",
    "Task": "cab.task",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cab' has no attribute {name!r}")


__all__ = [
    "Pattern",
    "ChoiceError",
    "UnsupportedConfigError",
    "UnsupportedPatternError",
    "attention_spec",
    "build_attention",
    "list_attentions",
    "list_tasks",
    "register_attention",
    "register_task",
    "task_spec",
    "AttentionLayer",
    "MultiHeadAttention",
    "Task",
    "__version__",
]
