"""Sliding-window softmax attention as in Zoology (Arora et al., 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models"; `zoology/mixers/slide_attn.py`), the baseline of the
Based paper's accuracy-versus-state-size plot.

    for each query i:   S_i = { j : i - window <= j <= i }          (Zoology's band: window past keys + self)
                        o_i = softmax_{j in S_i}(q_i·k_j / √Dh) v_j

One call of `cab.ops.window_attention`: exact band, before = window, after = 0, in query blocks of
`window` (each block reads its own and the previous block of keys, a span of 2·window), so memory is
O(L·2·window), never L×L; FLOPs 8·L·window·Dh per head. Noncausal self uses the symmetric band
|i - j| <= window (before = after = window, a span of three blocks). `local` is CAB's convention of
the same op (its own block size).

Recurrent form (decoding): a cache of the last `window` keys and values, 2·window·Dh per head, so
state_size = 2·dim·window, which is Zoology's convention for this mixer.
Reference: dense softmax attention with the band as its mask (`window_allowed`).
"""

from __future__ import annotations

import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import softmax_attention, window_allowed, window_attention, window_attention_flops

_CROSS = "a window needs aligned query and key positions; cross attention has none"


@register_attention(
    "sliding_window",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _CROSS, Pattern.CAUSAL_CROSS: _CROSS},
    family="sparse",
    paper={"title": "Zoology: Measuring and Improving Recall in Efficient Language Models",
           "authors": "Arora et al.", "venue": "ICLR", "year": 2024, "url": "https://arxiv.org/abs/2312.04927"},
)
class SlidingWindowAttention(MultiHeadAttention):
    hparam_constraints = {"window": {"ge": 1}}  # checked before a job starts (cab.schema)

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, window: int = 64):
        super().__init__(dim, num_heads, pattern)
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window

    def _band(self, length: int) -> tuple[int, int, int]:
        """(before, after, block): blocks of w queries, w = the window (at most the length: a longer
        window already covers every key, so the band and the block are the same at w = L)."""
        w = min(self.window, length)
        return w, (0 if self.causal else w), w

    def attend(self, q, k, v, key_padding_mask):
        # q, k, v: (B, H, L, Dh) -> (B, H, L, Dh)
        before, after, block = self._band(q.shape[-2])
        return window_attention(q, k, v, before, after, block=block, key_padding_mask=key_padding_mask)

    def reference_attend(self, q, k, v, key_padding_mask):
        allowed = window_allowed(q.shape[-2], self.window, 0 if self.causal else self.window,
                                 key_padding_mask=key_padding_mask)
        return softmax_attention(q, k, v, allowed)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        before, after, block = self._band(len_q)
        return window_attention_flops(batch, self.num_heads, len_q, d, d, before, after, block)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.dim * min(self.window, seq_len)  # cached keys and values of the window

    # -- decode: a window cache ------------------------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x, window=self.window)

    def step(self, x_t, state):
        # the cache holds keys i-w..i-1 and the token its own: exactly Zoology's band, no mask
        return self.kv_cache_step(x_t, state, lambda q, k, v: F.scaled_dot_product_attention(q, k, v))
