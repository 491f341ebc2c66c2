"""Blocked local self-attention with halos, from HaloNet: "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones" (Vaswani, Ramachandran, Srinivas, Parmar, Hechtman, Shlens,
CVPR 2021).

The sequence is cut into non-overlapping blocks of `block_size` queries; each block attends to the
keys of its own block widened by `halo_size` neighbours on each side (the block's "halo"), so all
queries of a block share one key window of block_size + 2·halo_size keys. Causal: the halo extends
behind only, and a causal mask applies inside the window.

Port: the b×b image blocks with a halo ring become blocks of b tokens with h tokens on either side
(paper defaults b = 8, h = 3 are kept); the relative position embeddings of the paper are omitted.

Cost per head: L/b blocks × (b × W) scores and products, W = b + 2h (causal: b + h): O(L·W·Dh).
Memory: the key/value windows, (L/b)·W·Dh per head; never L×L.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention

from ._part3_common import ceil_div, keep_mask, masked_attend

_NO_CROSS = "blocks and halos are neighbourhoods of aligned positions; a separate source sequence has none"


@register_attention(
    "halo",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class HaloAttention(MultiHeadAttention):
    """HaloNet blocked local attention (Vaswani et al. 2021), 1-D blocks with halos."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, block_size: int = 8, halo_size: int = 3):
        super().__init__(dim, num_heads, pattern)
        if block_size < 1 or halo_size < 0:
            raise ValueError("block_size must be >= 1 and halo_size >= 0")
        self.block_size = block_size
        self.halo_size = halo_size

    def _window(self) -> tuple[int, int]:
        """(keys behind the block, keys after it)."""
        return (self.halo_size, 0) if self.causal else (self.halo_size, self.halo_size)

    def attend(self, q, k, v, key_padding_mask):
        b_, h_, length, d = q.shape  # q, k, v: (B, H, L, Dh)
        blk = self.block_size
        before, after = self._window()
        width = blk + before + after  # W: keys per block
        n = ceil_div(length, blk)
        pad = n * blk - length
        keep = keep_mask(key_padding_mask, b_, length, q.device)  # (B, L)
        qb = F.pad(q, (0, 0, 0, pad)).view(b_, h_, n, blk, d)  # (B, H, n, b, Dh)
        # keys padded by the halo on both ends (and to whole blocks), then cut into overlapping windows
        kp = F.pad(k, (0, 0, before, pad + after)).unfold(2, width, blk)  # (B, H, n, Dh, W)
        vp = F.pad(v, (0, 0, before, pad + after)).unfold(2, width, blk).transpose(-1, -2)  # (B, H, n, W, Dh)
        keepw = F.pad(keep, (before, pad + after), value=False).unfold(1, width, blk)  # (B, n, W)
        allowed = keepw[:, None, :, None, :]  # (B, 1, n, 1, W)
        if self.causal:
            # query at offset r of the block sits at window slot r + before; keys up to it are visible
            r = torch.arange(blk, device=q.device)[:, None]
            w = torch.arange(width, device=q.device)[None, :]
            allowed = allowed & (w <= r + before)  # (B, 1, n, b, W)
        scores = (qb @ kp) * d**-0.5  # (B, H, n, b, W)
        out = masked_attend(scores, allowed, vp)  # (B, H, n, b, Dh)
        return out.reshape(b_, h_, n * blk, d)[:, :, :length]

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # per block: QKᵀ (2·b·W·Dh) and ·V (2·b·W·Dh), for every head -> 4·n·b·W·dim per example
        before, after = self._window()
        width = self.block_size + before + after
        n = ceil_div(len_q, self.block_size)
        return 4 * batch * n * self.block_size * width * self.dim

    def state_size(self, seq_len: int) -> int | None:
        # recurrent (streaming) form: the keys and values of the current window, b + h - 1 tokens
        if not self.causal:
            return None
        return 2 * self.dim * (self.block_size + self.halo_size - 1)
