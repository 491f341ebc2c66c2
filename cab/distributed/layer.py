"""`SequenceParallel`: a registered attention layer run across the ranks of a process group.

    sp = SequenceParallel(layer, "ring")        # or distribute(layer, "ring"); the layer's parameters
    y_r = sp(x_r, key_padding_mask=mask_r)      # x_r: (B, L/P, dim), rank r's contiguous slice
                                                # -> y_r: (B, L/P, dim), the layer's output there

It is the same function as `layer(x, ...)` on the whole sequence (tests/test_distributed.py checks
outputs and input gradients in float64). Parameters are replicated: every rank holds the same
weights, and after backward each rank's `.grad` covers its own slice; `all_reduce_gradients`
sums them (as data parallelism does). With `inputs="replicated"` the module takes and returns the
whole sequence, identical on every rank, and distributes only itself (the training cell's form:
the rest of the backbone runs replicated): it keeps its slice (backward: the slices' gradients are
all-gathered) and all-gathers its output (backward: each rank keeps its slice of the gradient).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from .adapters import LASP, STRATEGIES, check, ulysses_per_head
from .comm import _gather, all_reduce_gradients, world
from .lasp import lasp_linear_attention
from .ring import ring_attention
from .ulysses import ulysses_forward

INPUTS = ("sharded", "replicated")


def shard(t: torch.Tensor | None, dim: int = 1, group=None) -> torch.Tensor | None:
    """This rank's contiguous slice of `t` along `dim` (a view); the length must divide by the world size."""
    if t is None:
        return None
    rank, size = world(group)
    length = t.shape[dim]
    if length % size:
        raise ValueError(f"a sequence of {length} positions does not split into {size} equal slices: pad it to a "
                         f"multiple of {size} (with key_padding_mask True on the padding)")
    n = length // size
    return t.narrow(dim, rank * n, n)


class _KeepSlice(Function):
    """Forward: this rank's slice of a replicated tensor. Backward: every rank's slice gradient, gathered,
    so that the replicated computation before it gets the whole gradient on every rank."""

    @staticmethod
    def forward(ctx, t, dim, group):
        ctx.dim, ctx.group = dim, group
        return shard(t, dim, group).clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.cat(_gather(grad.contiguous(), ctx.group).unbind(0), dim=ctx.dim), None, None


class _GatherSlices(Function):
    """Forward: the slices of every rank, concatenated (the replicated whole). Backward: this rank's slice
    of the gradient (the computation after it is replicated, so every rank holds the same gradient)."""

    @staticmethod
    def forward(ctx, t, dim, group):
        ctx.dim, ctx.group = dim, group
        return torch.cat(_gather(t, group).unbind(0), dim=dim)

    @staticmethod
    def backward(ctx, grad):
        return shard(grad, ctx.dim, ctx.group), None, None


class SequenceParallel(nn.Module):
    """`layer` on a sequence split across the ranks of `group` by `strategy` (see the module docstring).

    strategy: "ring" (exact softmax), "ulysses" (heads scattered), "lasp" (linear-attention state);
    `cab.distributed.strategies_for(name)` says which apply. query_chunk: ring's queries per block
    product (None: the whole block). inputs: "sharded" (each rank passes its slice) or "replicated"."""

    def __init__(self, layer: nn.Module, strategy: str, group=None, inputs: str = "sharded",
                 query_chunk: int | None = None):
        super().__init__()
        name = getattr(layer, "attention_name", type(layer).__name__)
        check(name, strategy, getattr(layer, "pattern", None))
        if inputs not in INPUTS:
            raise ValueError(f"unknown inputs {inputs!r}; valid: {', '.join(INPUTS)}")
        if strategy == "ring":
            p = getattr(layer, "dropout", 0.0)
            p = p.p if isinstance(p, nn.Dropout) else p
            if p and layer.training:
                raise ValueError(f"ring computes exact softmax attention without attention dropout; {name} has "
                                 f"dropout={p} in training mode (set it to 0, or use ulysses)")
        self.layer = layer
        self.strategy = strategy
        self.group = group
        self.inputs = inputs
        self.query_chunk = query_chunk
        self.name = name
        self.per_head = ulysses_per_head(name) if strategy == "ulysses" else ()

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x, context=None, key_padding_mask=None):
        if self.inputs == "replicated":
            x = _KeepSlice.apply(x, 1, self.group)
            context = None if context is None else _KeepSlice.apply(context, 1, self.group)
            key_padding_mask = shard(key_padding_mask, 1, self.group)
        out = self.local_forward(x, context, key_padding_mask)
        return _GatherSlices.apply(out, 1, self.group) if self.inputs == "replicated" else out

    def local_forward(self, x, context=None, key_padding_mask=None):
        """x: (B, Lq/P, dim), context: (B, Lk/P, dim) or None, key_padding_mask: (B, Lk/P): this rank's slices."""
        layer = self.layer
        if self.strategy == "ring":
            source = layer.check_inputs(x, context)
            q = layer.split_heads(layer.q_proj(x))  # (B, H, Lq/P, Dh)
            k, v = layer.split_heads(layer.k_proj(source)), layer.split_heads(layer.v_proj(source))
            out = ring_attention(q, k, v, key_padding_mask, causal=layer.causal, query_chunk=self.query_chunk,
                                 group=self.group)
            return layer.out_proj(layer.merge_heads(out))
        if self.strategy == "ulysses":
            return ulysses_forward(layer, x, context, key_padding_mask, self.per_head, self.group)
        form = LASP[self.name](layer, x, context, key_padding_mask, self.group)
        out = lasp_linear_attention(form.phi_q, form.phi_k, form.v, causal=layer.causal,
                                    key_padding_mask=key_padding_mask, normalize=form.normalize, eps=form.eps,
                                    log_decay=form.log_decay, chunk_size=form.chunk_size, group=self.group)
        return form.finish(out)

    # -- the layer's cost hooks, so a backbone's accounting sees the layer it wraps ------------------
    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        return self.layer.flops(batch, len_q, len_k)

    def state_size(self, seq_len: int):
        return self.layer.state_size(seq_len)

    def runtime_info(self) -> dict:
        _, size = world(self.group)
        return {**self.layer.runtime_info(), "distributed": {"strategy": self.strategy, "world_size": size}}

    def sync_gradients(self) -> None:
        """Sum the wrapped layer's parameter gradients over the ranks (after backward)."""
        all_reduce_gradients(self.layer.parameters(), self.group)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy}, inputs={self.inputs}"


def distribute(layer: nn.Module, strategy: str, group=None, **options) -> SequenceParallel:
    """`SequenceParallel(layer, strategy, group, **options)`."""
    return SequenceParallel(layer, strategy, group, **options)


__all__ = ["INPUTS", "STRATEGIES", "SequenceParallel", "distribute", "shard"]
