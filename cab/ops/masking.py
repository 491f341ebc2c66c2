"""Masks, the masked softmax, and dense softmax attention: the one convention for every mechanism.

Mask conventions (all bool):
- `key_padding_mask` (B, Lk): True = padding. CAB's convention, what `attend` receives.
- `keep` (B, L): True = a real token (the negation of key_padding_mask).
- `allowed`: broadcastable to the scores (..., Lq, Lk), True = the query may attend to the key.

Softmax convention (`masked_softmax`, and everything built on it): disallowed scores are filled with
the finite finfo.min (never -inf, so no inf - inf = NaN inside softmax), the softmax is taken, and the
result is multiplied by "the row has an allowed entry" (disallowed entries of such a row are already
exactly exp(finfo.min - max) = 0). A row with nothing allowed therefore gives all zeros, not NaN and
not a uniform row, and its gradient is a finite zero. With log-sum-exp outputs an empty row has
lse = -inf, which gives it weight 0 when parts are merged (`merge_softmax_parts`).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


# ---------------------------------------------------------------------------------------------
# masks


def keep_mask(key_padding_mask: torch.Tensor | None, batch: int, length: int, device=None) -> torch.Tensor:
    """(B, L) bool, True = a real token: ~key_padding_mask, or all True when there is no padding."""
    if key_padding_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    return ~key_padding_mask


def causal_mask(len_q: int, len_k: int, device=None) -> torch.Tensor:
    """(Lq, Lk) bool, True where j <= i (query i, key j; positions aligned at 0)."""
    return torch.ones(len_q, len_k, dtype=torch.bool, device=device).tril()


def allowed_mask(
    key_padding_mask: torch.Tensor | None, len_q: int, len_k: int, causal: bool = False, device=None
) -> torch.Tensor | None:
    """The `allowed` mask of padding and/or causality, or None when everything is allowed.

    -> bool broadcastable to (B, H, Lq, Lk): (B, 1, 1, Lk) for padding only, (1, 1, Lq, Lk) for causal
    only, (B, 1, Lq, Lk) for both. causal: key j is allowed for query i iff j <= i.
    """
    allowed = None
    if key_padding_mask is not None:
        allowed = ~key_padding_mask[:, None, None, :]
        device = key_padding_mask.device if device is None else device
    if causal:
        tri = causal_mask(len_q, len_k, device)[None, None]
        allowed = tri if allowed is None else allowed & tri
    return allowed


def zero_padding(t: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the padded positions of t: (B, H, L, X) or (B, L, X); key_padding_mask (B, L) True = padding.

    The way kernelised methods drop padding: a zero feature row adds nothing to Σ φ(k) vᵀ or Σ φ(k).
    """
    if key_padding_mask is None:
        return t
    pad = key_padding_mask[:, None, :, None] if t.dim() == 4 else key_padding_mask[:, :, None]
    return t.masked_fill(pad, 0.0)


def sdpa_mask(
    key_padding_mask: torch.Tensor | None, causal: bool, len_q: int, len_k: int, device=None
) -> tuple[torch.Tensor | None, bool]:
    """(attn_mask, is_causal) for F.scaled_dot_product_attention; attn_mask is bool, True = may attend.

    SDPA refuses is_causal together with an attn_mask, so with padding the causal mask is folded in
    (an Lq×Lk bool); without padding is_causal is passed through and SDPA picks its fused causal path.
    A query row with nothing allowed is NaN or 0 depending on the SDPA backend: use `softmax_attention`
    where such rows occur and must be 0.
    """
    if key_padding_mask is None:
        return None, causal
    return allowed_mask(key_padding_mask, len_q, len_k, causal, device), False


# ---------------------------------------------------------------------------------------------
# masked softmax


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """softmax of `scores` over `dim` restricted to `allowed` (bool, broadcastable to scores).

    Disallowed entries get probability exactly 0; a row with nothing allowed is all zeros (not NaN),
    with a finite zero gradient. allowed=None is the plain softmax. Scores may be -inf at some allowed
    entries, but a row's largest allowed score must exceed finfo.min (mask with `allowed`, not with -inf).
    """
    if allowed is None:
        return torch.softmax(scores, dim=dim)
    filled = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)  # finite: no inf - inf in softmax
    return _softmax_of_filled(filled, allowed, dim)


def _softmax_of_filled(filled: torch.Tensor, allowed: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """masked_softmax of scores already filled with finfo.min where not allowed (callers that own the scores
    fill them in place). Disallowed entries are exp(finfo.min - max) = 0 already in any row with an allowed
    entry, so multiplying by "the row has one" (a smaller tensor than allowed) zeroes exactly the empty rows.
    allowed=None: the caller knows that every row has an allowed entry, and the pass over p is skipped."""
    p = torch.softmax(filled, dim=dim)
    return p if allowed is None else p * allowed.any(dim=dim, keepdim=True)


def masked_softmax_lse(scores: torch.Tensor, allowed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, log-sum-exp) over the last dim; the same convention as `masked_softmax`.

    scores: (..., Lk); allowed: bool broadcastable to scores, or None -> probs (..., Lk), lse (...).
    A row with nothing allowed gives probs 0 and lse = -inf (weight 0 in `merge_softmax_parts`).
    """
    if allowed is None:
        return torch.softmax(scores, dim=-1), torch.logsumexp(scores, dim=-1)
    return _softmax_lse_of_filled(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), allowed)


def _softmax_lse_of_filled(
    filled: torch.Tensor, allowed: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """masked_softmax_lse of scores already filled with finfo.min where not allowed (allowed=None: as in
    `_softmax_of_filled`, every row is known to have an allowed entry)."""
    p = torch.softmax(filled, dim=-1)
    # lse = max + log Σ exp(s - max) = max - log(p at the max): two reductions, no second exp pass; the
    # gradient is exact (d max cancels between the terms)
    lse = filled.amax(dim=-1) - torch.log(p.amax(dim=-1))
    if allowed is None:
        return p, lse
    nonempty = allowed.any(dim=-1)
    return p * nonempty[..., None], torch.where(nonempty, lse, torch.full_like(lse, NEG_INF))


def merge_softmax_parts(
    parts: list[tuple[torch.Tensor, torch.Tensor]], return_lse: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Combine softmax-attention outputs over disjoint key sets into the softmax over their union.

    parts: [(out (..., L, Dv), lse (..., L))], each out normalised over its own keys with its log-sum-exp
    (lse = -inf for a row that saw no key) -> out (..., L, Dv) [, lse (...,  L), -inf where no part saw a key].
    out = Σ_p exp(lse_p - lse) out_p with lse = log Σ_p exp(lse_p). A row empty in every part gives 0.
    """
    lses = torch.stack([lse for _, lse in parts], dim=0)  # (P, ..., L)
    m = lses.amax(dim=0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()  # all-empty rows: any finite m
    w = torch.exp(lses - m)  # (P, ..., L), 0 for empty parts; written out (not logsumexp): finite gradients
    total = w.sum(dim=0)
    w = w / total.clamp_min(torch.finfo(total.dtype).tiny)
    out = sum(w[i].unsqueeze(-1) * o for i, (o, _) in enumerate(parts))
    if not return_lse:
        return out
    lse = torch.where(total > 0, m + torch.log(total.clamp_min(torch.finfo(total.dtype).tiny)),
                      torch.full_like(total, NEG_INF))
    return out, lse


# ---------------------------------------------------------------------------------------------
# dense softmax attention


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    allowed: torch.Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """masked_softmax(q kᵀ·scale, allowed) v: the one dense "masked attend" (materialises Lq×Lk).

    q: (..., Lq, D)  k: (..., Lk, D)  v: (..., Lk, Dv)  allowed: bool broadcastable to (..., Lq, Lk), True =
    may attend, or None. scale defaults to D^-1/2. -> out (..., Lq, Dv) [, lse (..., Lq)]; a query with
    nothing allowed gets out 0 (lse -inf). FLOPs: `softmax_attention_flops`.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = (q * scale) @ k.transpose(-1, -2)  # scale the Lq×D queries, not the Lq×Lk scores
    if return_lse:
        p, lse = masked_softmax_lse(scores, allowed)
        return p @ v, lse
    return masked_softmax(scores, allowed) @ v


def softmax_attention_flops(batch: int, heads: int, len_q: int, len_k: int, dk: int, dv: int) -> int:
    """FLOPs of `softmax_attention`: q kᵀ (2·Lq·Lk·Dk) and P v (2·Lq·Lk·Dv) per (batch, head)."""
    return batch * heads * 2 * len_q * len_k * (dk + dv)
