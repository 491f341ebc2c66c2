"""Blocked local self-attention with halos, from HaloNet: "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones" (Vaswani, Ramachandran, Srinivas, Parmar, Hechtman, Shlens,
CVPR 2021).

The sequence is cut into non-overlapping blocks of `block_size` queries; each block attends to the
keys of its own block widened by `halo_size` neighbours on each side (the block's "halo"), so all
queries of a block share one key window of block_size + 2·halo_size keys. Causal: the halo extends
behind only, and a causal mask applies inside the window.

Port: the b×b image blocks with a halo ring become blocks of b tokens with h tokens on either side
(paper defaults b = 8, h = 3 are kept); the relative position embeddings of the paper are omitted.

One call of `cab.ops.window_attention` with block = b, before = after = h (causal: after = 0 and a
causal mask), exact=False (a block's whole span, not a band per query).

Cost per head: L/b blocks × (b × W) scores and products, W = b + 2h (causal: b + h): O(L·W·Dh).
Memory: the key/value windows, (L/b)·W·Dh per head; never L×L.
Reference: dense softmax attention with the blocks' windows as its mask (`window_allowed`).
Decode (causal): a cache of the last b + h − 1 keys and values (the most a later token of a block reads:
its block's earlier tokens and the halo); token i reads the newest i − (⌊i/b⌋·b − h) of them and its own,
a suffix of the cache. state_size = 2·dim·min(b + h − 1, n), O((b + h)·dim) per token.
"""

from __future__ import annotations

import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import softmax_attention, window_allowed, window_attention, window_attention_flops

_NO_CROSS = "blocks and halos are neighbourhoods of aligned positions; a separate source sequence has none"


@register_attention(
    "halo",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="sparse",
    paper={"title": "Scaling Local Self-Attention for Parameter Efficient Visual Backbones",
           "authors": "Vaswani et al.", "venue": "CVPR", "year": 2021, "url": "https://arxiv.org/abs/2103.12731"},
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
        # q, k, v: (B, H, L, Dh) -> (B, H, L, Dh); every query of a block sees the block's whole window
        before, after = self._window()
        return window_attention(q, k, v, before, after, block=self.block_size, exact=False, causal=self.causal,
                                key_padding_mask=key_padding_mask)

    def reference_attend(self, q, k, v, key_padding_mask):
        before, after = self._window()
        allowed = window_allowed(q.shape[-2], before, after, block=self.block_size, exact=False, causal=self.causal,
                                 key_padding_mask=key_padding_mask)
        return softmax_attention(q, k, v, allowed)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # per block: QKᵀ (2·b·W·Dh) and ·V (2·b·W·Dh) over its window of W = b + before + after keys
        before, after = self._window()
        d = self.head_dim
        return window_attention_flops(batch, self.num_heads, len_q, d, d, before, after, self.block_size)

    def state_size(self, seq_len: int) -> int | None:
        # recurrent (streaming) form: the keys and values of the current window, b + h - 1 tokens
        if not self.causal:
            return None
        return 2 * self.dim * min(self.block_size + self.halo_size - 1, seq_len)

    # -- decode: the last b + h - 1 keys and values --------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x, window=self.block_size + self.halo_size - 1)

    def step(self, x_t, state):
        i = state.position  # this token's position
        first = max(0, (i // self.block_size) * self.block_size - self.halo_size)  # its window's first key
        visible = i - first + 1  # the newest keys of the cache and its own: a suffix

        def read(q, k, v):  # k, v: (B, H, n, Dh), oldest first
            return F.scaled_dot_product_attention(q, k[:, :, -visible:], v[:, :, -visible:])

        return self.kv_cache_step(x_t, state, read)
