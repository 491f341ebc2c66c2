"""Local (sliding-window) attention, as benchmarked by CAB (Zhang et al., ICML 2023; window attention
as in Image Transformer, Parmar et al. 2018, and Longformer's sliding window, Beltagy et al. 2020).

Query i attends, with an exact softmax, to the keys j with |i - j| <= window (noncausal self) or
i - window <= j <= i (causal self): CAB's symmetric window, one call of `cab.ops.window_attention`
with before = window, after = window (causal: 0), exact band:

    split the queries into blocks of C                        (B, H, n, C, Dh)
    each block reads one span of C + 2·window keys (causal: C + window), a view of the padded keys
    S = Q_blk K_spanᵀ / √Dh, keep offsets inside the window   (B, H, n, C, span)
    O_blk = softmax(S) V_span                                 (B, H, n, C, Dh)

Memory and time O(L·(C + 2·window)·Dh); no L×L tensor. CAB's default window (wsize) is 15.
(`sliding_window` is Zoology's band, the same op with its own block and extents.)
Cross patterns are unsupported: a window needs aligned query and key positions.
FLOPs per head: n·(2·C·span·Dh + 2·C·span·Dh), n = ⌈L/C⌉ (the whole span is computed).
Reference: dense softmax attention with the band as its mask (`window_allowed`).
Decode form (causal self): a cache of the last `window` keys and values (a generated token adds its own
before reading): state 2·dim·window numbers per example, O(window·dim) per token at any context.
"""

from __future__ import annotations

import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import softmax_attention, window_allowed, window_attention, window_attention_flops

_NO_CROSS = "a sliding window needs aligned query and key positions; cross attention has none"


@register_attention(
    "local",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="sparse",
    paper={"title": "Image Transformer",
           "authors": "Parmar et al.", "venue": "ICML", "year": 2018, "url": "https://arxiv.org/abs/1802.05751"},
)
class LocalAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, window: int = 15):
        super().__init__(dim, num_heads, pattern)
        if window < 0:
            raise ValueError("window must be >= 0")
        self.window = window

    @property
    def _after(self) -> int:
        return 0 if self.causal else self.window  # causal: the band ends at the query itself

    def attend(self, q, k, v, key_padding_mask):
        # q, k, v: (B, H, L, Dh) -> (B, H, L, Dh)
        return window_attention(q, k, v, self.window, self._after, key_padding_mask=key_padding_mask)

    def reference_attend(self, q, k, v, key_padding_mask):
        allowed = window_allowed(q.shape[-2], self.window, self._after, key_padding_mask=key_padding_mask)
        return softmax_attention(q, k, v, allowed)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        return window_attention_flops(batch, self.num_heads, len_q, d, d, self.window, self._after)

    def state_size(self, seq_len: int) -> int | None:
        # causal: the last `window` keys and values, carried from one token to the next (the next token
        # brings its own); noncausal windows look ahead, so no recurrence
        return 2 * self.dim * min(self.window, seq_len) if self.causal else None

    # -- decode: a window cache ------------------------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x, window=self.window)

    def step(self, x_t, state):
        # the cache holds keys i-w..i-1 and the token its own: exactly the band, no mask
        return self.kv_cache_step(x_t, state, lambda q, k, v: F.scaled_dot_product_attention(q, k, v))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", window={self.window}"
