"""Pooling a sequence into S contiguous segments of its real tokens, and causal prefix means.

The one binning rule. Each example's real tokens (keep = True) are ranked 0..n-1 in order; padding has no
rank, so padding anywhere (appended or interior) never moves a boundary. Segment s covers the ranks

    [⌊s·n/S⌋, max(⌊(s+1)·n/S⌋, ⌊s·n/S⌋ + 1))

- S <= n: the non-overlapping form of adaptive average pooling's bins, a partition of the ranks into
  contiguous runs of ⌊n/S⌋ or ⌈n/S⌉ tokens (e.g. 5 tokens into 2: ranks [0, 2) and [2, 5)).
- S > n: no segment is empty: segment s is the single token of rank ⌊s·n/S⌋, so tokens repeat (as
  adaptive average pooling repeats them when upsampling). Why never-empty: every consumer (Nyström and
  LARA landmarks, agent tokens, pooled keys) gets S well-defined summaries without a mask, and short
  sequences (n -> 1) degrade to attending the real tokens themselves.
- n = 0 (an all-padding example): every segment is empty, its mean 0 and `valid` False; `valid` is
  otherwise all True, returned so that callers stay correct for such examples.

Forms: `segment_weights` (B, S, L), the averaging matrix (pooling as a matrix product); `segment_means`,
the same means by scatter/gather (no matrix product); `segment_ids` the partition of real tokens.
`causal_segment_means` pools, for every query i, its own prefix's real tokens by the same rule (TransNeXt's
causal pooled tokens; in chunks of queries: `rank_prefix` once, then `causal_segment_means_of` per chunk);
`causal_prefix_mean` is the running mean of real tokens. Reference forms:
`segment_means_reference` and `causal_segment_means_reference`, Python loops over examples and segments.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def segment_bounds(counts: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank bounds [start, end) of each segment: counts (...) real tokens (long) -> start, end (..., S) long.

    The rule of the module docstring; an example with no real token gets start = end = 0.
    """
    s = torch.arange(num_segments, device=counts.device)
    n = counts[..., None]
    start = (s * n) // num_segments
    end = torch.maximum(((s + 1) * n) // num_segments, start + 1)
    end = torch.where(n > 0, end, start)  # n = 0: empty
    return start, end


def _ranks(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keep (B, L) -> rank of each real token (B, L) long (meaningless at padding), real count (B,) long."""
    cum = torch.cumsum(keep.to(torch.long), dim=1)
    return cum - 1, cum[:, -1] if keep.shape[1] else keep.new_zeros(keep.shape[0], dtype=torch.long)


def segment_ids(keep: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The partition of each example's real tokens: keep (B, L) -> ids (B, L) long, counts (B, S) long.

    ids: the segment s whose range [⌊s·n/S⌋, ⌊(s+1)·n/S⌋) holds the token's rank, -1 at padding; counts:
    real tokens per segment. For S <= n these are exactly the segments of the rule. For S > n some counts
    are 0: those segments are, by the never-empty rule, the single token of rank ⌊s·n/S⌋, which also
    belongs to another segment (`segment_means` and `segment_weights` include it; ids cannot).
    """
    rank, n = _ranks(keep)
    n1 = n.clamp(min=1)[:, None]
    # rank r lies in s iff ⌊s·n/S⌋ <= r < ⌊(s+1)·n/S⌋, i.e. s = ⌈(r+1)·S/n⌉ - 1
    ids = torch.div((rank.clamp(min=0) + 1) * num_segments - 1, n1, rounding_mode="floor")
    ids = torch.where(keep, ids, torch.full_like(ids, -1))
    counts = torch.zeros(keep.shape[0], num_segments + 1, dtype=torch.long, device=keep.device)
    counts.scatter_add_(1, torch.where(keep, ids, num_segments), keep.to(torch.long))  # padding -> spare slot S
    return ids, counts[:, :num_segments]


def segment_weights(keep: torch.Tensor, num_segments: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, S, L) averaging matrix: row s is 1/|segment s| on the real tokens of segment s, 0 elsewhere.

    keep: (B, L) True = real. `segment_weights(keep, S) @ t` = segment means of t (B, [1,] L, D) when
    broadcast over heads as w[:, None]; FLOPs 2·S·L·D per (batch, head). An empty example's rows are 0.
    """
    rank, n = _ranks(keep)
    start, end = segment_bounds(n, num_segments)  # (B, S)
    r = rank[:, None, :]
    inside = (r >= start[..., None]) & (r < end[..., None]) & keep[:, None, :]  # (B, S, L)
    w = inside.to(dtype or torch.get_default_dtype())
    return w / w.sum(-1, keepdim=True).clamp_min(1.0)


def segment_means(t: torch.Tensor, keep: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of t over the S segments of each example's real tokens, by scatter (no matrix product).

    t: (B, L, D) or (B, H, L, D); keep: (B, L) True = real -> means (B, S, D) or (B, H, S, D), and
    valid (B, S) bool (False only for an example with no real token, whose means are 0).
    """
    b, length = keep.shape
    ids, counts = segment_ids(keep, num_segments)
    rank, n = _ranks(keep)
    heads = t.shape[1] if t.dim() == 4 else None
    idx = ids.clamp(min=0)
    src = t * keep.to(t.dtype)[..., None] if heads is None else t * keep.to(t.dtype)[:, None, :, None]
    if heads is None:
        sums = t.new_zeros(b, num_segments, t.shape[-1]).scatter_add_(1, idx[..., None].expand_as(t), src)
        means = sums / counts.clamp(min=1).to(t.dtype)[..., None]
    else:
        sums = t.new_zeros(b, heads, num_segments, t.shape[-1])
        sums.scatter_add_(2, idx[:, None, :, None].expand_as(t), src)
        means = sums / counts.clamp(min=1).to(t.dtype)[:, None, :, None]
    # S > n: an empty partition segment is the single token of rank ⌊s·n/S⌋ (never-empty rule)
    start, _ = segment_bounds(n, num_segments)
    pos = torch.arange(length, device=keep.device).expand(b, length)
    pos_of_rank = torch.zeros(b, length + 1, dtype=torch.long, device=keep.device)
    pos_of_rank.scatter_(1, torch.where(keep, rank, torch.full_like(rank, length)), pos)
    single = pos_of_rank.gather(1, start)  # (B, S)
    if heads is None:
        picked = t.gather(1, single[..., None].expand(-1, -1, t.shape[-1]))
        fill = (counts == 0)[..., None]
    else:
        picked = t.gather(2, single[:, None, :, None].expand(-1, heads, -1, t.shape[-1]))
        fill = (counts == 0)[:, None, :, None]
    valid = (n > 0)[:, None].expand(b, num_segments)
    means = torch.where(fill, picked, means)
    keep_valid = valid[..., None] if heads is None else valid[:, None, :, None]
    return torch.where(keep_valid, means, torch.zeros_like(means)), valid


class RankPrefix(NamedTuple):
    """What `causal_segment_means` needs for any range of queries, computed once by `rank_prefix`:
    sums (B, H, L+1, D), sums[:, :, j] = Σ of the real tokens at positions < j; position (B, L+1) long, the
    position of the real token of rank r (L for r >= n, so sums at it is the total); count (B, L) long, the
    real tokens at positions <= i."""

    sums: torch.Tensor
    position: torch.Tensor
    count: torch.Tensor


def rank_prefix(t: torch.Tensor, keep: torch.Tensor) -> RankPrefix:
    """The prefix sums behind `causal_segment_means`: t (B, H, L, D), keep (B, L) -> `RankPrefix`.

    The sum of the ranks [lo, hi) is sums[position[hi]] - sums[position[lo]]: positional prefix sums of the
    real tokens, read at the position where a rank starts (padding anywhere adds zeros, never moves a bin).
    """
    b, _, length, _ = t.shape
    sums = F.pad(torch.cumsum(t * keep.to(t.dtype)[:, None, :, None], dim=2), (0, 0, 1, 0)).contiguous()
    rank, _ = _ranks(keep)
    position = torch.full((b, length + 1), length, dtype=torch.long, device=keep.device)
    pos = torch.arange(length, device=keep.device).expand(b, length)
    position.scatter_(1, torch.where(keep, rank, torch.full_like(rank, length)), pos)  # padding -> slot L
    position[:, length] = length  # rank n (and the padding's slot): the end, where sums holds the total
    return RankPrefix(sums, position, torch.cumsum(keep.to(torch.long), dim=1))


def causal_segment_means_of(
    prefix: RankPrefix, num_segments: int, start: int = 0, stop: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`causal_segment_means` for the queries [start, stop) from a `rank_prefix` (pool chunk after chunk
    of queries without recomputing the prefix sums). -> means (B, H, stop-start, S, D), valid (B, stop-start, S)."""
    sums, position, count = prefix
    b, h, length1, d = sums.shape
    stop = length1 - 1 if stop is None else stop
    c, s = stop - start, num_segments
    n_i = count[:, start:stop]  # (B, c) real tokens <= i
    lo, hi = segment_bounds(n_i, s)  # (B, c, S) rank bounds
    rows = sums.view(b * h * length1, d)
    base = (torch.arange(b * h, device=sums.device) * length1).view(b, h, 1)

    def at(ranks):  # sums at the positions where ranks (B, c, K) start -> (B, H, c, K, D), one row gather
        idx = position.gather(1, ranks.reshape(b, -1))[:, None, :] + base  # (B, H, c·K)
        return rows.index_select(0, idx.reshape(-1)).view(b, h, c, ranks.shape[-1], d)

    if bool((n_i >= s).all()):  # no repeated token: segment s ends where s+1 starts, one gather of S+1 bounds
        edges = at(torch.cat([lo, hi[..., -1:]], dim=-1))
        total = edges[:, :, :, 1:] - edges[:, :, :, :-1]
    else:
        total = at(hi) - at(lo)
    return total / (hi - lo).clamp(min=1).to(sums.dtype)[:, None, :, :, None], hi > lo


def causal_segment_means(
    t: torch.Tensor, keep: torch.Tensor, num_segments: int, start: int = 0, stop: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every query position i in [start, stop): the S segment means of the real tokens at positions <= i.

    t: (B, H, L, D); keep: (B, L) -> means (B, H, stop-start, S, D), valid (B, stop-start, S) (False where
    no real token is at or before i). The binning rule with n_i = real tokens <= i, from prefix sums read at
    rank boundaries, so the cost is O(L·D + (stop-start)·S·D) elementwise, no matrix product. To pool the
    queries in chunks, compute `rank_prefix` once and call `causal_segment_means_of` per chunk.
    """
    return causal_segment_means_of(rank_prefix(t, keep), num_segments, start, stop)


def causal_prefix_mean(t: torch.Tensor, keep: torch.Tensor | None, dim: int = -2) -> torch.Tensor:
    """Running mean of the real tokens: out_i = Σ_{j<=i, real} t_j / #{j <= i real} (0 where there is none).

    t: any layout with the sequence on `dim` and the batch on dim 0, e.g. (B, L, D), (B, H, L, D), (B, L, H, D)
    with dim=1; keep: (B, L) True = real, or None (all real).
    """
    dim = dim % t.dim()
    if keep is None:
        shape = [1] * t.dim()
        shape[dim] = t.shape[dim]
        count = torch.arange(1, t.shape[dim] + 1, device=t.device, dtype=t.dtype).view(shape)
        return torch.cumsum(t, dim=dim) / count
    shape = [1] * t.dim()
    shape[0], shape[dim] = keep.shape
    w = keep.to(t.dtype).view(shape)
    return torch.cumsum(t * w, dim=dim) / torch.cumsum(w, dim=dim).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------
# reference forms (Python loops; tests only)


def _reference_bins(n: int, num_segments: int) -> list[range]:
    """The rule, written out: the rank range of each segment for n real tokens."""
    if n == 0:
        return [range(0) for _ in range(num_segments)]
    bins = []
    for s in range(num_segments):
        lo, hi = (s * n) // num_segments, ((s + 1) * n) // num_segments
        bins.append(range(lo, hi) if hi > lo else range(lo, lo + 1))
    return bins


def segment_means_reference(
    t: torch.Tensor, keep: torch.Tensor, num_segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`segment_means` by loops over examples and segments; t (B, L, D) or (B, H, L, D)."""
    means = t.new_zeros(*t.shape[:-2], num_segments, t.shape[-1])
    valid = torch.zeros(t.shape[0], num_segments, dtype=torch.bool)
    for bi in range(t.shape[0]):
        real = t[bi][..., keep[bi], :]  # (.., n, D)
        for s, ranks in enumerate(_reference_bins(real.shape[-2], num_segments)):
            if len(ranks):
                means[bi, ..., s, :] = real[..., list(ranks), :].mean(dim=-2)
                valid[bi, s] = True
    return means, valid


def causal_segment_means_reference(
    t: torch.Tensor, keep: torch.Tensor, num_segments: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`causal_segment_means` over all positions by loops: query i pools t[:, :, :i+1] with its keep."""
    per_query = [segment_means_reference(t[:, :, : i + 1], keep[:, : i + 1], num_segments) for i in range(t.shape[2])]
    return torch.stack([m for m, _ in per_query], dim=2), torch.stack([v for _, v in per_query], dim=1)
