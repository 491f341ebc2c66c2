"""Private helpers shared by the part-2 zoo modules (not scanned by the registry: leading `_`).

Shapes: (B, H, L, D). Masks are bool, True = may attend (``allowed``) or True = padding (``pad``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
                  scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ·scale, masked by ``allowed``) v, where a row with no allowed key gives 0, not NaN.

    q: (..., Lq, D)  k: (..., Lk, D)  v: (..., Lk, Dv)  allowed: broadcastable to (..., Lq, Lk)
    FLOPs: 2·Lq·Lk·D (scores) + 2·Lq·Lk·Dv (weights·v), as two batched matrix products.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-1, -2)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    top = scores.amax(dim=-1, keepdim=True).clamp(min=torch.finfo(scores.dtype).min)  # -inf rows -> finite
    weights = torch.exp(scores - top)
    denom = weights.sum(dim=-1, keepdim=True)
    weights = weights / denom.clamp(min=torch.finfo(scores.dtype).tiny)
    return weights @ v


def pad_length(t: torch.Tensor, multiple: int, dim: int = -2, value: float = 0.0) -> torch.Tensor:
    """Pad dimension ``dim`` of ``t`` at the end up to a multiple of ``multiple``."""
    pad = (-t.shape[dim]) % multiple
    if not pad:
        return t
    dim = dim % t.dim()
    spec = [0, 0] * (t.dim() - 1 - dim) + [0, pad]
    return F.pad(t, spec, value=value)


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, causal: bool,
                             key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention where query i sees key j iff 0 <= i - j <= window (causal) or |i - j| <= window.

    Zoology's convention (`slide_attn.py`: keys i-window..i), so the decoding cache is `window` past
    (k, v) pairs. Computed in blocks of ``window`` queries, each against its own block and the one
    before (and after, noncausal): memory O(L·2w) (O(L·3w)), never L×L.

    q, k, v: (B, H, L, D) with the same L; key_padding_mask: (B, L) True = padding -> (B, H, L, Dv).
    """
    b, h, length, d = q.shape
    w = max(1, min(window, length))
    n = -(-length // w)
    qb = pad_length(q, w).reshape(b, h, n, w, d)  # (B, H, n, w, D)
    kb = pad_length(k, w).reshape(b, h, n, w, d)
    vb = pad_length(v, w).reshape(b, h, n, w, v.shape[-1])
    pos = torch.arange(n * w, device=q.device)
    valid = pos < length  # positions added by the padding to a multiple of w
    if key_padding_mask is not None:
        valid = valid & ~pad_length(key_padding_mask.float(), w, dim=-1, value=1.0).bool()  # (B, n·w)
    valid = valid.expand(b, n * w).reshape(b, n, w)

    def shifted(t: torch.Tensor, s: int, dim: int) -> torch.Tensor:  # out[block i] = t[block i + s], zero-filled
        if s == 0:
            return t
        zeros = torch.zeros_like(t.narrow(dim, 0, 1))
        if s < 0:
            return torch.cat([zeros, t.narrow(dim, 0, t.shape[dim] - 1)], dim=dim)
        return torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), zeros], dim=dim)

    shifts = [-1, 0] if causal else [-1, 0, 1]
    keys = torch.cat([shifted(kb, s, 2) for s in shifts], dim=3)  # (B, H, n, S·w, D)
    vals = torch.cat([shifted(vb, s, 2) for s in shifts], dim=3)
    kvalid = torch.cat([shifted(valid, s, 1) for s in shifts], dim=2)  # (B, n, S·w)
    r = torch.arange(w, device=q.device)
    rel = torch.cat([r + s * w for s in shifts])  # key offset from the block start, (S·w,)
    diff = r[:, None] - rel[None, :]  # i - j, (w, S·w)
    band = (diff >= 0) & (diff <= window) if causal else diff.abs() <= window
    allowed = band[None, None, None] & kvalid[:, None, :, None, :]  # (B, 1, n, w, S·w)
    out = masked_attend(qb, keys, vals, allowed)  # (B, H, n, w, Dv)
    return out.reshape(b, h, n * w, -1)[:, :, :length]


def sliding_window_flops(batch: int, heads: int, length: int, d: int, dv: int, window: int, causal: bool) -> int:
    """FLOPs of `sliding_window_attention`: per block of w queries, scores and weights·V against
    2w (causal) or 3w (noncausal) keys: 2·w·S·w·(D + Dv)."""
    w = max(1, min(window, length))
    n = -(-length // w)
    span = (2 if causal else 3) * w
    return batch * heads * n * 2 * w * span * (d + dv)


def masked_mean(t: torch.Tensor, keep: torch.Tensor | None, dim: int) -> torch.Tensor:
    """Mean of ``t`` over ``dim`` counting only positions where ``keep`` (broadcastable) is True."""
    if keep is None:
        return t.mean(dim=dim)
    keep = keep.to(t.dtype)
    return (t * keep).sum(dim=dim) / keep.sum(dim=dim).clamp(min=1.0)


def sdpa_mask(key_padding_mask: torch.Tensor | None, causal: bool, len_q: int, len_k: int,
              device: torch.device) -> tuple[torch.Tensor | None, bool]:
    """SDPA's (attn_mask, is_causal) for padding and/or a causal mask. attn_mask: True = may attend."""
    if key_padding_mask is None:
        return None, causal
    allowed = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
    if causal:  # SDPA refuses is_causal with attn_mask, so the causal mask is folded in (Lq×Lk bool)
        allowed = allowed & torch.ones(len_q, len_k, dtype=torch.bool, device=device).tril()
    return allowed, False


def safe_softmax(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax where a slice that is entirely -inf gives zeros instead of NaN."""
    top = scores.amax(dim=dim, keepdim=True).clamp(min=torch.finfo(scores.dtype).min)
    weights = torch.exp(scores - top)
    return weights / weights.sum(dim=dim, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
