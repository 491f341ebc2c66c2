"""Sliding-window softmax attention as in Zoology (Arora et al., 2023, "Zoology: Measuring and
Improving Recall in Efficient Language Models"; `zoology/mixers/slide_attn.py`), the baseline of the
Based paper's accuracy-versus-state-size plot.

    for each query i:   S_i = { j : i - window <= j <= i }          (Zoology's band: window past keys + self)
                        o_i = softmax_{j in S_i}(q_i·k_j / √Dh) v_j

Computed in blocks of `window` queries, each against its own and the previous block of keys
(masked to the band), so memory is O(L·2·window), never L×L; FLOPs 8·L·window·Dh per head.
Noncausal self uses the symmetric band |i - j| <= window (three blocks).

Recurrent form (decoding): a cache of the last `window` keys and values, 2·window·Dh per head, so
state_size = 2·dim·window, which is Zoology's convention for this mixer.
"""

from __future__ import annotations

from cab import MultiHeadAttention, Pattern, register_attention

from ._part2_common import sliding_window_attention, sliding_window_flops

_CROSS = "a window needs aligned query and key positions; cross attention has none"


@register_attention(
    "sliding_window",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _CROSS, Pattern.CAUSAL_CROSS: _CROSS},
)
class SlidingWindowAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, window: int = 64):
        super().__init__(dim, num_heads, pattern)
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window

    def attend(self, q, k, v, key_padding_mask):
        # q, k, v: (B, H, L, Dh) -> (B, H, L, Dh)
        return sliding_window_attention(q, k, v, self.window, self.causal, key_padding_mask)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        return sliding_window_flops(batch, self.num_heads, len_q, d, d, self.window, self.causal)

    def state_size(self, seq_len: int) -> int:
        return 2 * self.dim * min(self.window, seq_len)  # cached keys and values of the window
