"""Private helpers for the part-3 zoo (vision/multimodal mechanisms ported to 1-D sequences).

Not scanned by the registry (leading underscore). Shapes are noted per function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def keep_mask(key_padding_mask: torch.Tensor | None, batch: int, length: int, device) -> torch.Tensor:
    """(B, L) bool, True = a real token (the negation of CAB's key_padding_mask)."""
    if key_padding_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    return ~key_padding_mask


def masked_attend(scores: torch.Tensor, allowed: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis of `scores` restricted to `allowed`, then · v.

    scores: (..., Lq, Lk); allowed: bool, broadcastable to scores; v: (..., Lk, Dv) -> (..., Lq, Dv).
    A row with no allowed key returns 0 (not NaN), so padded or empty rows never poison gradients.
    """
    weights = masked_softmax(scores, allowed)
    return weights @ v


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """softmax over the last axis restricted to `allowed`; all-masked rows give zeros."""
    low = torch.finfo(scores.dtype).min
    weights = torch.softmax(scores.masked_fill(~allowed, low), dim=-1)
    return weights * allowed.any(dim=-1, keepdim=True).to(scores.dtype)


def segment_ids(keep: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each example's *real* tokens, in order, into `segments` contiguous equal parts.

    keep: (B, L) bool -> seg: (B, L) long in [0, segments) (padding gets 0, weighted out by the
    caller), counts: (B, segments) real tokens per segment. Ranks among real tokens, not positions,
    so appending padding never moves a segment boundary.
    """
    keepf = keep.to(torch.long)
    rank = torch.cumsum(keepf, dim=1) - 1  # (B, L)
    n = keepf.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
    # segment s holds ranks floor(s·n/S) .. floor((s+1)·n/S) - 1 (adaptive pooling's bins), i.e.
    # rank r belongs to s = ceil((r+1)·S/n) - 1
    seg = torch.div((rank.clamp(min=0) + 1) * segments - 1, n, rounding_mode="floor").clamp(max=segments - 1)
    seg = seg * keepf
    counts = torch.zeros(keep.shape[0], segments, dtype=torch.long, device=keep.device)
    counts.scatter_add_(1, seg, keepf)
    return seg, counts


def segment_mean(t: torch.Tensor, keep: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average pooling of a sequence into `segments` contiguous pieces of its real tokens
    (the 1-D form of adaptive average pooling of a feature map).

    t: (B, L, D) or (B, H, L, D); keep: (B, L) -> means of the same layout with L -> segments,
    and valid: (B, segments) bool (False for an empty segment, i.e. fewer real tokens than segments).
    """
    seg, counts = segment_ids(keep, segments)
    weight = keep.to(t.dtype)
    if t.dim() == 3:
        b, _, d = t.shape
        sums = t.new_zeros(b, segments, d).scatter_add_(1, seg[..., None].expand(-1, -1, d), t * weight[..., None])
        means = sums / counts.clamp(min=1).to(t.dtype)[..., None]
    else:
        b, h, _, d = t.shape
        idx = seg[:, None, :, None].expand(-1, h, -1, d)
        sums = t.new_zeros(b, h, segments, d).scatter_add_(2, idx, t * weight[:, None, :, None])
        means = sums / counts.clamp(min=1).to(t.dtype)[:, None, :, None]
    return means, counts > 0


def sliding_windows(t: torch.Tensor, left: int, right: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Windows of keys around each position, for positions start..stop-1.

    t: (B, H, L, D) -> (B, H, stop-start, left+1+right, D); window slot w of position i holds
    position i - left + w (zeros outside 0..L-1; callers mask them with `window_valid`).
    """
    length = t.shape[2]
    stop = length if stop is None else stop
    lo, hi = start - left, stop + right  # the span of key positions needed, may overrun the ends
    pad_lo, pad_hi = max(0, -lo), max(0, hi - length)
    piece = t[:, :, max(lo, 0) : min(hi, length)]
    if pad_lo or pad_hi:
        piece = F.pad(piece, (0, 0, pad_lo, pad_hi))
    return piece.unfold(2, left + 1 + right, 1).transpose(-1, -2)  # (B, H, n, W, D)


def window_valid(keep: torch.Tensor, left: int, right: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """(B, n, W) bool: slot w of position i is a real, in-range key (same layout as `sliding_windows`)."""
    return sliding_windows(keep[:, None, :, None].to(torch.uint8), left, right, start, stop)[:, 0, :, :, 0].bool()


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def inv_sqrt(d: int) -> float:
    return 1.0 / math.sqrt(d)
