"""Sequence parallelism: one attention layer across the processes of a `torch.distributed` group.

A strategy is a property of how a layer runs, not a new mechanism: the distributed layer computes the
same function as the layer in one process (tests/test_distributed.py checks outputs and input
gradients in float64 at world sizes 2 and 4). Each rank holds a contiguous slice of the sequence.

    strategy  how                                              distributes (cab.distributed.strategies_for)
    --------  -----------------------------------------------  ---------------------------------------------
    ring      keys and values travel round the ring; partial   exact softmax attention: softmax, vanilla,
              softmaxes merged by log-sum-exp (ring.py)         flash
    ulysses   all-to-all: heads scattered, sequence gathered;  every MultiHeadAttention whose heads are
              the mechanism's own `attend` (ulysses.py)          independent (adapters.ULYSSES)
    lasp      each rank's keys reduced to a linear-attention   linear, lightning, based, performer
              state; prefix (causal) or total passed (lasp.py)   (adapters.LASP)

    from cab.distributed import SequenceParallel, shard, strategies_for
    sp = SequenceParallel(layer, "ring")          # inside an initialised process group
    y_r = sp(shard(x), key_padding_mask=shard(mask))

Collectives (comm.py) are differentiable and count the bytes they send; the communication formulas
and memory per process of each strategy are in cost.py; docs/distributed.md has the whole story.
"""

from __future__ import annotations

_LAZY = {  # torch loads on first use, so that importing cab.distributed.config stays light
    "STRATEGIES": "adapters", "check": "adapters", "distributable": "adapters", "strategies_for": "adapters",
    "why_not": "adapters", "SequenceParallel": "layer", "distribute": "layer", "shard": "layer", "INPUTS": "layer",
    "all_reduce_gradients": "comm", "counting": "comm", "traffic": "comm",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cab.distributed' has no attribute {name!r}")


__all__ = ["STRATEGIES", "SequenceParallel", "all_reduce_gradients", "check", "counting", "distributable",
           "distribute", "shard", "strategies_for", "why_not"]
