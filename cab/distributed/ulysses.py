"""All-to-all sequence parallelism (DeepSpeed-Ulysses: Jacobs et al., "DeepSpeed Ulysses: System
Optimizations for Enabling Training of Extreme Long Sequence Transformer Models", 2023).

Each rank projects its own slice of the sequence, then one all-to-all trades "all heads of L/P
positions" for "H/P heads of all L positions"; the mechanism's own per-head core (`attend`) runs on
full-length sequences of fewer heads, unchanged; a second all-to-all trades back:

    q, k, v = split_heads(W x_r)                  (B, H, L/P, Dh)      this rank's positions
    q, k, v = all_to_all(·, heads -> sequence)    (B, H/P, L, Dh)      this rank's heads, every position
    o = layer_r.attend(q, k, v, key_padding_mask) (B, H/P, L, Dh)      layer_r: the layer cut to heads
                                                                       [r·H/P, (r+1)·H/P)
    o = all_to_all(o, sequence -> heads)          (B, H, L/P, Dh)
    y_r = W_o merge_heads(o)

So any registered `MultiHeadAttention` whose heads do not interact distributes this way, whatever
its core (windows, pooling, random features, recurrences). `layer_r` is a shallow copy of the layer
with `num_heads` = H/P, `dim` = dim/P and its per-head parameters and buffers sliced to its heads (the
adapter table names them: Lightning's decays, Performer's random features, ...); the slice is taken
at every call, so gradients reach the full parameter. Needs H divisible by P.

Cost per rank: the core's own cost on H/P heads of length L. Bytes sent per rank (forward):
(P-1)/P of each of q, k, v and o, (P-1)/P² · B·(2·Lq + 2·Lk)·dim·e, plus the all-gathered padding
mask (P-1)·B·Lk/P bytes; backward the same again. Peak memory per rank: the core's on H/P heads at
full length (for softmax through SDPA, O(B·L·dim/P); for vanilla, B·(H/P)·L² scores).
"""

from __future__ import annotations

import copy

import torch

from .comm import all_to_all, gather_constant, world


def head_slice(layer, heads: slice, per_head: tuple[str, ...]):
    """A shallow copy of `layer` computing only `heads`: num_heads and dim cut, and every attribute named
    in `per_head` (parameters or buffers with the heads on dim 0) sliced; other parameters are shared."""
    view = copy.copy(layer)
    view._parameters, view._buffers = dict(layer._parameters), dict(layer._buffers)
    n = heads.stop - heads.start
    view.num_heads, view.dim = n, n * layer.head_dim
    for name in per_head:
        if name in layer._parameters:
            view._parameters[name] = layer._parameters[name][heads]  # a differentiable slice
        elif name in layer._buffers:
            view._buffers[name] = layer._buffers[name][heads]
        else:
            raise AttributeError(f"{type(layer).__name__} has no parameter or buffer {name!r} to slice by head")
    return view


def ulysses_forward(layer, x, context, key_padding_mask, per_head: tuple[str, ...] = (), group=None):
    """The layer on this rank's slices (see the module docstring). x: (B, Lq/P, dim), context: (B, Lk/P, dim)
    or None, key_padding_mask: (B, Lk/P) or None -> (B, Lq/P, dim)."""
    rank, size = world(group)
    h = layer.num_heads
    if h % size:
        raise ValueError(f"ulysses scatters heads over the ranks: num_heads={h} is not divisible by world_size={size}")
    source = layer.check_inputs(x, context)
    q = layer.split_heads(layer.q_proj(x))  # (B, H, Lq/P, Dh)
    k = layer.split_heads(layer.k_proj(source))  # (B, H, Lk/P, Dh)
    v = layer.split_heads(layer.v_proj(source))
    q, k, v = (all_to_all(t, 1, 2, group) for t in (q, k, v))  # (B, H/P, L, Dh): my heads, every position
    mask = gather_constant(key_padding_mask, group)  # (P, B, Lk/P)
    mask = None if mask is None else torch.cat(mask.unbind(0), dim=1)  # (B, Lk)
    mine = slice(rank * (h // size), (rank + 1) * (h // size))
    out = head_slice(layer, mine, per_head).attend(q, k, v, mask)  # (B, H/P, Lq, Dh)
    out = all_to_all(out, 2, 1, group)  # (B, H, Lq/P, Dh)
    return layer.out_proj(layer.merge_heads(out))
