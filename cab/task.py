"""The task interface: data + model + metrics, with no harness logic.

A task is a class registered with `@register_task(name, patterns=...)`. The runner builds it with
the pattern under test, the seed and the `task` config node, then:

    model = task.build_model(attention)          # attention(role, dim, num_heads) -> layer
    for batch in task.train_batches(batch_size): # deterministic from the seed
        loss = task.loss(task.forward(model, batch), batch)
    metrics = task.evaluate(model)               # name -> number; see metric_info

`attention` is an `AttentionFactory` (cab/run/factory.py): it returns the mechanism under test for the
layers whose role is the pattern under test and softmax for every other attention in the backbone
(CAB's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import torch
from torch import nn

from cab.gates import GATES, Gate
from cab.patterns import Pattern
from cab.registry import ParamError  # noqa: F401 - raised by check_params

if TYPE_CHECKING:  # the harness builds the factory; a task only calls it
    from cab.run.factory import AttentionFactory


@dataclass(frozen=True)
class MetricInfo:
    higher_is_better: bool
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "description": self.description}


def batch_indices(num_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches over `num_examples` in a random order from `generator` (last partial batch dropped)."""
    order = torch.randperm(num_examples, generator=generator)
    for start in range(0, num_examples - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


class Task:
    """Base class of tasks. Subclasses set `primary_metric` and `metric_info` and implement the
    methods below; `params` are the task's config values (the `task` node less its `name`)."""

    task_name: str = "?"  # set by @register_task
    primary_metric: str = "accuracy"
    metric_info: dict[str, MetricInfo] = {}
    # The reference gate (cab/gates.py): what softmax must reach on every seed for a leaderboard column
    # of this task to count as learnt. None: the built-in table `cab.gates.GATES[task_name]`, if any.
    gate: ClassVar[Gate | None] = None

    # The `task` config node is checked before any job starts (cab/schema.py): types from __init__'s
    # annotations (or defaults), ranges from these declarations, else by name (cab.schema.NAME_RULES).
    # {name: {"ge": 1}} (ge, gt, le, lt), {"choices": [...]}, {} (no range); None: a parameter of a
    # base class's __init__ (reached through **kwargs) that this task does not take.
    param_constraints: ClassVar[dict[str, dict[str, Any] | None]] = {}

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Cross-field constraints on the task's parameters (the `task` node with defaults filled in,
        types and ranges already checked), run before any job starts: raise `ParamError(key, message)`
        for what no job could run with (an odd MQAR length), so a sweep fails at once, not per job."""

    def __init__(self, pattern: Pattern, seed: int, **params: Any):
        self.pattern = Pattern.parse(pattern)
        self.seed = seed
        self.params = params

    # -- data and model ---------------------------------------------------------------------------
    def build_model(self, attention: AttentionFactory) -> nn.Module:
        raise NotImplementedError

    def train_batches(self, batch_size: int) -> Iterator[Any]:
        """Training batches in a fixed order from the seed; may end (epochs) or be infinite."""
        raise NotImplementedError

    def epoch_generator(self) -> torch.Generator:
        """A generator for the next training epoch, seeded from the task's seed and the epoch number,
        so every epoch has its own order and a rerun repeats it exactly."""
        self._epoch = getattr(self, "_epoch", -1) + 1
        return torch.Generator().manual_seed(self.seed * 7919 + self._epoch)

    def forward(self, model: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def tokens(self, batch: Any) -> int:
        """Tokens the model reads in this batch (for throughput)."""
        raise NotImplementedError

    def example_batch(self) -> Any:
        """One test example (batch of 1), used to count forward FLOPs per example."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        raise NotImplementedError

    # -- optional ---------------------------------------------------------------------------------
    def has_validation(self) -> bool:
        """True when `validate` can score a model on held-out *training* data (never the test set):
        what learning-rate selection and early stopping read."""
        return False

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, float]:
        """The metrics of `evaluate`, on the validation split carved from the training data."""
        raise NotImplementedError(f"task {self.task_name!r} has no validation split")

    @classmethod
    def reference_gate(cls) -> Gate | None:
        """The task's reference gate: the class's `gate`, else the built-in one for its name (the
        built-in tasks' gates live in cab/gates.py, where the torch-free leaderboard reads them too).
        Written into every record as `gate`."""
        return cls.gate if cls.gate is not None else GATES.get(cls.task_name)

    def reference_metrics(self) -> dict[str, float]:
        """Baselines recorded beside every result (majority class, unigram, ...), name -> number."""
        return {}

    def variant(self) -> str | None:
        """A short name for a configuration that measures something else under the same task name
        (e.g. gCOG's split); recorded as `task_variant` and shown as its own leaderboard column."""
        return None

    def attention_lengths(self) -> dict[Pattern, tuple[int, int]]:
        """(Lq, Lk) seen by the attention of each role, for state sizes; optional."""
        return {}

    def longest_attention_lengths(self) -> dict[Pattern, tuple[int, int]]:
        """(Lq, Lk) of the longest sequences the attention of each role sees, in training or in
        evaluation; a length-bounded attention (`max_len`) is built for these. Default:
        `attention_lengths()`; a task that evaluates longer sequences (extrapolation) says so here."""
        return self.attention_lengths()
