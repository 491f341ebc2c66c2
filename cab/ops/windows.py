"""Banded (sliding-window) softmax attention in query blocks, and per-position window views.

`window_attention` is the one windowed softmax: query i sees key j iff i - before <= j <= i + after
(exact=True), or iff j lies in its query block's span (exact=False), further restricted by causality,
key padding and labels. It never forms an L×L tensor: queries are cut into blocks of C, and each block
reads one span of C + before + after keys as an unfold (a view) of the padded keys.

Who expresses what with it:
- local (CAB):            exact, before = w, after = w (causal: after = 0)
- sliding_window (Zoology): exact, before = w, after = 0 (keys i-w..i) or before = after = w
- Transformer-LS short:   noncausal exact=False, block = w, before = after = w//2; causal exact, before = w-1
- HaloNet:                exact=False, block = b, before = after = halo (causal: after = 0, causal=True)
- CrossFormer SDA/LDA:    exact=False, before = after = 0, block = G (groups), causal=True for causal
- Reformer:               in sorted order, labels = buckets, self_score, return_lse to merge rounds
- Based's window part:    as sliding_window
`unfold_windows` / `window_valid` give each position its own window of keys (TransNeXt's aggregated
attention mixes them with other scores under one softmax).

The reference is the dense form: `softmax_attention` with `window_allowed` as the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .masking import _softmax_lse_of_filled, _softmax_of_filled
from .shapes import ceil_div


def window_block_size(before: int, after: int) -> int:
    """Default query block C of `window_attention`: 32 for small windows, 64 from a 64-wide window up."""
    return 64 if max(before, after) >= 64 else 32


def _block(length: int, before: int, after: int, block: int | None) -> tuple[int, int, int]:
    """(C, number of blocks n, span C + before + after) as `window_attention` uses them."""
    c = max(1, min(block or window_block_size(before, after), length))
    return c, ceil_div(length, c), c + before + after


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    before: int,
    after: int,
    *,
    block: int | None = None,
    exact: bool = True,
    causal: bool = False,
    key_valid: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    self_score: float | None = None,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention over a band of keys, computed in query blocks (memory O(L·(C+before+after))).

    q, k: (B, H, L, D)  v: (B, H, L, Dv), one sequence (query i and key i are the same position).
    Query i (in block ⌊i/C⌋, C = `block` or `window_block_size`) may attend to key j iff all hold:
      - 0 <= j < L;
      - exact=True:  i - before <= j <= i + after;
        exact=False: ⌊i/C⌋·C - before <= j < ⌊i/C⌋·C + C + after (the block's whole span: every query of
                     a block sees the same keys, as Transformer-LS segments and HaloNet blocks do);
      - causal=True: j <= i (with exact=True this is just after = 0; with exact=False it cuts the span);
      - key_valid[b, (h,) j] is True, key_valid bool (B, L) or (B, H, L); or key_padding_mask[b, j] is
        False, key_padding_mask (B, L) True = padding (CAB's convention; give either, or both: ANDed);
      - labels[b, h, i] == labels[b, h, j], labels (B, H, L) ints (Reformer's buckets).
    self_score: the score of j == i is replaced by this value where j == i is allowed (Reformer: a
    query attends to itself only when nothing else is there). scale defaults to D^-1/2.
    -> out (B, H, L, Dv) [, lse (B, H, L)]; a query with nothing allowed gets out 0 and lse -inf
    (`masked_softmax` convention), so lse outputs merge with `merge_softmax_parts`.
    FLOPs: `window_attention_flops` (the whole span of every block is computed).
    """
    b, h, length, d = q.shape
    dv = v.shape[-1]
    c, n, span = _block(length, before, after, block)
    lp = n * c
    scale = d**-0.5 if scale is None else scale
    qb = (F.pad(q, (0, 0, 0, lp - length)) if lp > length else q).reshape(b, h, n, c, d) * scale
    k_unf = F.pad(k, (0, 0, before, lp - length + after)).unfold(2, span, c)  # (B, H, n, D, span), a view
    v_unf = F.pad(v, (0, 0, before, lp - length + after)).unfold(2, span, c).transpose(-1, -2)  # (B, H, n, span, Dv)
    scores = qb @ k_unf  # (B, H, n, C, span)

    dev = q.device
    pos_q = torch.arange(lp, device=dev).view(n, c)  # (n, C)
    pos_k = torch.arange(n, device=dev)[:, None] * c - before + torch.arange(span, device=dev)[None, :]  # (n, span)
    allowed = ((pos_k >= 0) & (pos_k < length))[:, None, :]  # (n, 1, span): inside the sequence
    rel = pos_k[:, None, :] - pos_q[:, :, None]  # j - i, (n, C, span)
    if exact:
        allowed = allowed & (rel >= -before) & (rel <= after)
    if causal:
        allowed = allowed & (rel <= 0)
    allowed = allowed[None, None]  # (1, 1, n, C|1, span)
    valid = key_valid
    if key_padding_mask is not None:
        real = ~key_padding_mask
        valid = real if valid is None else valid & (real[:, None, :] if valid.dim() == 3 else real)
    if valid is not None:
        valid = valid if valid.dim() == 3 else valid[:, None, :]  # (B, H|1, L)
        valid = F.pad(valid, (before, lp - length + after), value=False).unfold(2, span, c)  # (B, H|1, n, span)
        allowed = allowed & valid[:, :, :, None, :]
    if labels is not None:
        lq = F.pad(labels, (0, lp - length)).view(b, h, n, c)
        lk = F.pad(labels, (before, lp - length + after)).unfold(2, span, c)  # out-of-range keys are masked above
        allowed = allowed & (lq[..., :, None] == lk[..., None, :])
    if self_score is not None:
        scores.masked_fill_((rel == 0)[None, None], self_score)
    scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min)  # in place: scores is this function's own tensor
    # query i < L may always attend key i (inside its band or its block's span, causal or not, same label), so
    # only key masks can leave a query with nothing allowed; without them the zeroing of empty rows is skipped
    rows = allowed if valid is not None or before < 0 or after < 0 else None
    if return_lse:
        p, lse = _softmax_lse_of_filled(scores, rows)  # the convention of masked_softmax(_lse)
    else:
        p = _softmax_of_filled(scores, rows)
    out = (p @ v_unf).reshape(b, h, lp, dv)[:, :, :length]  # (B, H, L, Dv)
    if return_lse:
        return out, lse.reshape(b, h, lp)[:, :, :length]
    return out


def window_attention_flops(
    batch: int, heads: int, length: int, dk: int, dv: int, before: int, after: int, block: int | None = None
) -> int:
    """FLOPs of `window_attention`: per block, q kᵀ over its span (2·C·span·Dk) and P v (2·C·span·Dv),
    n = ⌈L/C⌉ blocks, span = C + before + after, per (batch, head). Independent of exact/causal/labels
    (masked entries are computed)."""
    c, n, span = _block(length, before, after, block)
    return batch * heads * n * 2 * c * span * (dk + dv)


def window_allowed(
    length: int,
    before: int,
    after: int,
    *,
    block: int | None = None,
    exact: bool = True,
    causal: bool = False,
    key_valid: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    device=None,
) -> torch.Tensor:
    """The dense (.., L, L) `allowed` mask of `window_attention` with the same arguments (reference form).

    -> bool (1|B, 1|H, L, L), True = query i may attend key j. O(L²): tests and small references only.
    """
    c = max(1, min(block or window_block_size(before, after), length))
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    if exact:
        band = (j >= i - before) & (j <= i + after)
    else:
        start = (i // c) * c
        band = (j >= start - before) & (j < start + c + after)
    if causal:
        band = band & (j <= i)
    allowed = band[None, None]
    if key_valid is not None:
        allowed = allowed & (key_valid if key_valid.dim() == 3 else key_valid[:, None, :])[:, :, None, :]
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    if labels is not None:
        allowed = allowed & (labels[..., :, None] == labels[..., None, :])
    return allowed


# ---------------------------------------------------------------------------------------------
# per-position windows (each query its own window, e.g. TransNeXt's pixel-focused attention)


def unfold_windows(t: torch.Tensor, left: int, right: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """The window of each position i in [start, stop): t: (B, H, L, D) -> (B, H, stop-start, W, D), W = left+1+right.

    Slot w of position i holds position i - left + w, zeros where that is outside 0..L-1 (mask those
    with `window_valid`). A view of one padded slice: memory O((stop-start+W)·D), not O(L·W·D), until
    the caller computes with it.
    """
    length = t.shape[2]
    stop = length if stop is None else stop
    lo, hi = start - left, stop + right  # key positions needed, may overrun both ends
    piece = t[:, :, max(lo, 0) : min(hi, length)]
    pad_lo, pad_hi = max(0, -lo), max(0, hi - length)
    if pad_lo or pad_hi:
        piece = F.pad(piece, (0, 0, pad_lo, pad_hi))
    return piece.unfold(2, left + 1 + right, 1).transpose(-1, -2)


def window_valid(keep: torch.Tensor, left: int, right: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """(B, stop-start, W) bool, slot w of position i is a real, in-range key; keep (B, L) True = real.

    Same layout as `unfold_windows`."""
    return unfold_windows(keep[:, None, :, None].to(torch.uint8), left, right, start, stop)[:, 0, :, :, 0].bool()
