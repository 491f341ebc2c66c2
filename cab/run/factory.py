"""The attention factory a task builds its backbone with: the mechanism under test where a layer's role
is the pattern under test, exact softmax everywhere else (CAB's rule)."""

from __future__ import annotations

from typing import Any

from torch import nn

from cab.patterns import Pattern
from cab.registry import build_attention, with_length_bound


class AttentionFactory:
    """Builds every attention layer of a backbone: the mechanism under test where the layer's role
    is the pattern under test, exact softmax elsewhere. Keeps the layers under test for cost hooks.

    `lengths` is the task's `longest_attention_lengths()`, {role: (Lq, Lk)}. An attention with a
    `max_len` hyperparameter (`cab.registry.LENGTH_HPARAM`: Linformer's length projections, cosFormer's
    causal M) is defined for one longest sequence, as its paper trains it. Unless the config sets
    `max_len` (its config node holds null), it gets the task's longest key length for that role. A
    fixed large default would change the method (cosFormer's re-weighting) or its cost (Linformer's
    E and F grow with max_len) on short tasks."""

    BASELINE = "softmax"

    def __init__(self, name: str, pattern: Pattern, hparams: dict[str, Any] | None = None,
                 lengths: dict[Pattern, tuple[int, int]] | None = None, distributed: dict[str, Any] | None = None,
                 device: str = "cpu"):
        self.name = name
        # sequence parallelism of the layers under test (the config's `distributed`; cab/distributed/group.py)
        self.distributed = dict(distributed) if distributed and distributed.get("strategy") else None
        self.device = device
        self.pattern = Pattern.parse(pattern)
        self.hparams = dict(hparams or {})
        self.lengths = dict(lengths or {})
        self.layers_under_test: list[nn.Module] = []
        self.all_layers: list[nn.Module] = []

    def hparams_for(self, role: Pattern) -> dict[str, Any]:
        """The hyperparameters the mechanism under test is built with in `role`."""
        known = self.lengths.get(role)
        return with_length_bound(self.name, self.hparams, known[1] if known else None)

    def __call__(self, role: Pattern | str, dim: int, num_heads: int) -> nn.Module:
        role = Pattern.parse(role)
        if role is self.pattern:
            layer = build_attention(self.name, dim=dim, num_heads=num_heads, pattern=role, **self.hparams_for(role))
            if self.distributed:
                from cab.distributed.group import training_layer

                layer = training_layer(layer, self.distributed, self.device)
            self.layers_under_test.append(layer)
        else:
            layer = build_attention(self.BASELINE, dim=dim, num_heads=num_heads, pattern=role)
        self.all_layers.append(layer)
        return layer

    def sync_gradients(self) -> None:
        """After backward: sum the distributed layers' parameter gradients over the ranks (each covers its
        own slice of the sequence). Nothing to do in one process."""
        for layer in self.layers_under_test if self.distributed else ():
            layer.sync_gradients()
