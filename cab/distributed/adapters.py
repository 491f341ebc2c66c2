"""Which mechanism distributes by which strategy, and the per-mechanism knowledge each needs.

Three tables, one per strategy, keyed by registered name. The mechanisms' own modules are not
touched: what a strategy must know about a mechanism (which of its parameters are per head, its
feature map and decay) is written here, next to the strategy that uses it.

ring     exact softmax attention: the core must be softmax(Q Kᵀ/√Dh) V under the padding (and causal)
         mask, with `masked_softmax`'s convention, and no attention dropout while training.
ulysses  any `MultiHeadAttention` whose heads do not interact: `attend` runs on H/P heads at full length.
         The table names the parameters and buffers that hold one slice per head (dim 0 = heads).
lasp     linear attention with a state: an adapter turns the layer's inputs into (φ(q), φ(k), v, decay,
         normalisation) and its output back into the layer's (`LinearForm`).

Plugins: a `MultiHeadAttention` subclass opts in to ulysses with a class attribute
`ulysses_per_head = ("name", ...)` (empty tuple: no per-head parameters); `register_ulysses`,
`register_ring` and `register_lasp` add entries from code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cab.patterns import Pattern
from cab.registry import ChoiceError, attention_spec, list_attentions

STRATEGIES = ("ring", "ulysses", "lasp")

# ---------------------------------------------------------------------------------------------
# ring: exact softmax attention

RING: set[str] = {"softmax", "vanilla", "flash"}

# ---------------------------------------------------------------------------------------------
# ulysses: heads independent -> the per-head parameters and buffers to slice (dim 0 = heads)

ULYSSES: dict[str, tuple[str, ...]] = {
    "abc": (), "ccam": (), "channel": (), "cosformer": (), "flash": (), "flowformer": (), "halo": (), "lara": (),
    "linear": (), "linformer": (), "local": (), "nystromformer": (), "probsparse": (), "sliding_window": (),
    "softmax": (), "vanilla": (),
    "aggregated": ("query_embedding", "temperature", "learnable_tokens", "learnable_bias", "rel_pos_bias"),
    "landmark": ("landmark",),       # a learnt landmark vector per head
    "lightning": ("log_decay",),     # λ_h, one decay per head
    "performer": ("omega",),         # random features drawn per head
}

# why the other built-in mechanisms do not distribute by ulysses (their heads interact, or they have none)
ULYSSES_NOT: dict[str, str] = {
    "agent": "its depthwise convolution mixes the value channels of all heads (DWC over dim)",
    "routing": "its local context enhancement is a depthwise convolution over all heads' value channels",
    "moh": "its router picks heads per token from all heads (mixture of heads)",
    "glca": "its query ranking averages the attention rollout over all heads",
    "lsda": "a head's role depends on its index (the first ⌈H/2⌉ heads SDA, the rest LDA)",
    "perceiver": "its latent projections mix all heads (merge_heads, then a linear layer)",
    "based": "it writes its own forward (feature projections beside the heads), not a per-head attend",
    "longshort": "it writes its own forward (a dynamic projection over all heads), not a per-head attend",
    "lookup": "it writes its own forward, not a per-head attend",
    "reformer": "it writes its own forward (shared query-key projection), not a per-head attend",
    "gaussian": "it has no heads (an AttentionLayer, not a MultiHeadAttention)",
    "lka": "it has no heads (a convolutional AttentionLayer)",
    "mamba": "it has no heads (a selective state-space AttentionLayer)",
    "s4d": "it has no heads (a state-space AttentionLayer)",
}


# ---------------------------------------------------------------------------------------------
# lasp: linear attention with a state


@dataclass
class LinearForm:
    """A layer's core as linear attention on this rank's slices, and the way back to its output.

    phi_q (B, H, Lq/P, F), phi_k (B, H, Lk/P, F), v (B, H, Lk/P, Dv); log_decay None, (H,) or (B, H, L/P);
    finish: (B, H, Lq/P, Dv) -> (B, Lq/P, dim), the layer's output (norms, other parts, out_proj)."""

    phi_q: torch.Tensor
    phi_k: torch.Tensor
    v: torch.Tensor
    normalize: bool
    eps: float
    chunk_size: int
    finish: Callable[[torch.Tensor], torch.Tensor]
    log_decay: torch.Tensor | None = None


def _heads(layer, x, context):
    source = layer.check_inputs(x, context)
    return (layer.split_heads(layer.q_proj(x)), layer.split_heads(layer.k_proj(source)),
            layer.split_heads(layer.v_proj(source)))


def _output(layer):
    return lambda out: layer.out_proj(layer.merge_heads(out))


def _linear(layer, x, context, key_padding_mask, group) -> LinearForm:
    """Katharopoulos et al.: φ = elu + 1, normalised, no decay."""
    from cab.ops import elu_feature_map

    q, k, v = _heads(layer, x, context)
    return LinearForm(elu_feature_map(q), elu_feature_map(k), v, True, layer.eps, layer.chunk_size, _output(layer))


def _lightning(layer, x, context, key_padding_mask, group) -> LinearForm:
    """Lightning Attention-2: φ = SiLU, not normalised, decay λ_h per head (causal self), then the per-head
    RMS norm of TransNormerLLM (per position: local)."""
    from cab.ops import silu_feature_map

    q, k, v = _heads(layer, x, context)
    log_decay = layer.log_decay.to(q.dtype) if layer.use_decay else None  # (H,)
    return LinearForm(silu_feature_map(q), silu_feature_map(k), v, False, 0.0, layer.block_size,
                      lambda out: layer.out_proj(layer.merge_heads(layer._rms_norm(out))), log_decay)


def _performer(layer, x, context, key_padding_mask, group) -> LinearForm:
    """FAVOR+ with its stabilisers made global: noncausal, the key constant is the max over every rank's
    real keys (an all-reduce of the local maxima); causal, the running max continues from the max of the
    ranks before (an all-gather of the local maxima), and the decay that undoes it crosses the slice
    boundary: g at this slice's first position is c_before - c_first, as in one process (rank 0: 0)."""
    from cab.ops import favor_log_features, favor_query_features, log_decay_from_cumulative

    from .comm import all_reduce_max_constant, gather_constant, world

    if layer.redraw and layer.training:
        raise ValueError("performer with redraw=True draws new random features at every training forward, "
                         "separately on each rank; distribute it with redraw=False")
    q, k, v = _heads(layer, x, context)
    phi_q = favor_query_features(favor_log_features(q, layer.omega))  # (B, H, Lq/P, m): per query, local
    log_k = favor_log_features(k, layer.omega)  # (B, H, Lk/P, m)
    pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]
    low = torch.finfo(log_k.dtype).min / 4  # "no key yet", as favor_key_features
    eps = torch.finfo(v.dtype).tiny
    if not layer.causal:
        masked = log_k if pad is None else log_k.masked_fill(pad, low)
        c = all_reduce_max_constant(masked.amax(dim=(-2, -1), keepdim=True), group)  # (B, H, 1, 1), every rank
        return LinearForm(phi_q, torch.exp(masked - c), v, True, eps, layer.chunk_size, _output(layer))
    rank, _ = world(group)
    row_max = log_k.amax(-1, keepdim=True).detach()  # (B, H, L/P, 1)
    if pad is not None:
        row_max = row_max.masked_fill(pad, low)
    maxima = gather_constant(row_max.amax(2), group)  # (P, B, H, 1): each slice's max
    before = maxima[:rank].amax(0) if rank else None  # max over the slices before this one
    local = torch.cummax(row_max, dim=2).values
    c = local if before is None else torch.maximum(local, before[:, :, None, :])  # running max, global
    phi_k = torch.exp((log_k - c).clamp(max=0.0))
    start = c[:, :, :1] if before is None else before[:, :, None, :]  # c just before this slice (rank 0: c_0, g = 0)
    g = log_decay_from_cumulative(-torch.cat([start, c], dim=2).squeeze(-1))[..., 1:]  # (B, H, L/P)
    return LinearForm(phi_q, phi_k, v, True, eps, layer.chunk_size, _output(layer), g)


def _based(layer, x, context, key_padding_mask, group) -> LinearForm:
    """Based: Taylor features of its own feature projections, normalised, no decay; plus the sliding-window
    softmax on self patterns, which needs the `window` keys just before this slice (and, noncausal, just
    after it): a halo exchanged with the neighbouring ranks (`window_with_halo`)."""
    phi_q, phi_k, v, q, k = layer._project(x, context)

    def finish(out):
        if layer.window > 0:
            before, after = layer._band()
            out = out + window_with_halo(q, k, v, before, after, key_padding_mask, layer.window, layer.causal, group)
        return layer.out_proj(layer.merge_heads(out))

    return LinearForm(phi_q, phi_k, v, True, layer.eps, layer.chunk_size, finish)


LASP: dict[str, Callable[..., LinearForm]] = {
    "linear": _linear, "lightning": _lightning, "performer": _performer, "based": _based,
}


def window_with_halo(q, k, v, before: int, after: int, key_padding_mask, block: int, causal: bool, group=None):
    """`cab.ops.window_attention` of this rank's queries over a band of keys that may reach into the
    neighbouring slices: the last `before` keys of rank r-1 and the first `after` keys of rank r+1 are
    received (a differentiable ring shift), placed around the local ones, and marked invalid where there
    is no neighbour. q, k, v: (B, H, L/P, D) -> (B, H, L/P, D)."""
    from cab.ops import window_attention

    from .comm import ring_shift, start_shift, world

    rank, size = world(group)
    b, h, length, _ = q.shape
    if max(before, after) > length:
        raise ValueError(f"the sliding window reaches {max(before, after)} positions, more than a rank's slice of "
                         f"{length}: use fewer ranks, a longer sequence or a smaller window")
    keep = torch.ones(b, length, dtype=torch.bool, device=q.device) if key_padding_mask is None else ~key_padding_mask
    ks, vs, valid = [k], [v], [keep]
    if before:
        pk, pv = ring_shift(k[:, :, length - before:], v[:, :, length - before:], step=1, group=group)
        (pkeep,) = start_shift([keep[:, length - before:].to(torch.uint8)], 1, group).wait()
        ks, vs, valid = [pk, *ks], [pv, *vs], [pkeep.bool() & (rank > 0), *valid]  # rank 0 has no one before
    if after:
        nk, nv = ring_shift(k[:, :, :after], v[:, :, :after], step=-1, group=group)
        (nkeep,) = start_shift([keep[:, :after].to(torch.uint8)], -1, group).wait()
        ks, vs, valid = [*ks, nk], [*vs, nv], [*valid, nkeep.bool() & (rank < size - 1)]
    pad_q = lambda n: q.new_zeros(b, h, n, q.shape[-1])  # noqa: E731 - halo positions ask nothing
    q_ext = torch.cat([pad_q(before), q, pad_q(after)], dim=2)
    out = window_attention(q_ext, torch.cat(ks, 2), torch.cat(vs, 2), before, after, block=block, causal=causal,
                           key_valid=torch.cat(valid, 1))
    return out[:, :, before:before + length]


# ---------------------------------------------------------------------------------------------
# the queries


def register_ring(name: str) -> None:
    """Declare that `name`'s core is exact softmax attention (masked_softmax's convention)."""
    RING.add(name)


def register_ulysses(name: str, per_head: tuple[str, ...] = ()) -> None:
    """Declare that `name`'s heads are independent; `per_head` names its per-head parameters/buffers."""
    ULYSSES[name] = tuple(per_head)


def register_lasp(name: str, adapter: Callable[..., LinearForm]) -> None:
    """Declare `name`'s linear form: adapter(layer, x, context, key_padding_mask, group) -> LinearForm."""
    LASP[name] = adapter


def ulysses_per_head(name: str) -> tuple[str, ...] | None:
    """The per-head attributes to slice, or None if `name` does not distribute by ulysses."""
    if name in ULYSSES:
        return ULYSSES[name]
    declared = getattr(attention_spec(name).cls, "ulysses_per_head", None)
    return None if declared is None else tuple(declared)


def why_not(name: str, strategy: str, pattern: Pattern | str | None = None) -> str | None:
    """None if `strategy` distributes attention `name` (on `pattern`, if given), else the one-line reason."""
    from cab.attention import MultiHeadAttention

    if strategy not in STRATEGIES:
        raise ChoiceError(f"unknown distributed strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    spec = attention_spec(name)
    if pattern is not None:
        pattern = Pattern.parse(pattern)
        if pattern not in spec.patterns:
            return f"{name} does not support {pattern.value}: {spec.unsupported.get(pattern, '')}".rstrip(": ")
    if strategy == "ring" and name not in RING:
        return (f"ring merges exact softmax attention by log-sum-exp, and {name}'s core is not exact softmax "
                f"attention")
    if strategy == "ulysses" and ulysses_per_head(name) is None:
        if not issubclass(spec.cls, MultiHeadAttention):
            return f"ulysses scatters heads, and {name} has no heads (not a MultiHeadAttention)"
        return f"ulysses runs each head apart, and {name}'s heads are not independent: " + ULYSSES_NOT.get(
            name, "it does not declare `ulysses_per_head`")
    if strategy == "lasp" and name not in LASP:
        return (f"lasp passes a linear-attention state, and {name} has no linear form in "
                f"cab/distributed/adapters.py (those with one: {', '.join(sorted(LASP))})")
    return None


def strategies_for(name: str, pattern: Pattern | str | None = None) -> tuple[str, ...]:
    """The strategies that distribute attention `name` (on `pattern`, if given), in STRATEGIES order."""
    return tuple(s for s in STRATEGIES if why_not(name, s, pattern) is None)


def distributable(strategy: str | None = None) -> dict[str, tuple[str, ...]]:
    """{attention: its strategies} for every registered attention with at least one (or with `strategy`)."""
    out = {}
    for name in list_attentions():
        got = strategies_for(name)
        if got and (strategy is None or strategy in got):
            out[name] = got
    return out


def check(name: str, strategy: str, pattern: Pattern | str | None = None) -> None:
    """Raise ChoiceError (one line: why, and what is supported) unless `strategy` distributes `name`."""
    reason = why_not(name, strategy, pattern)
    if reason is None:
        return
    others = strategies_for(name, pattern)
    fits = f"strategies for {name}: {', '.join(others)}" if others else f"{name} distributes by no strategy"
    same = ", ".join(sorted(distributable(strategy))) or "none"
    raise ChoiceError(f"{strategy} cannot distribute {name}: {reason}; {fits}; {strategy} distributes: {same}")
