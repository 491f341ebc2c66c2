"""Vanilla softmax attention, written out (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

CAB's "vanilla" (fairseq-style `MultiheadAttention`): the quadratic baseline for efficiency lengths.

    S = Q Kᵀ / √Dh                      (B, H, Lq, Lk)   -- materialised: O(Lq·Lk) memory by design
    P = masked_softmax(S, allowed)      (B, H, Lq, Lk)   allowed: real keys (and j <= i, causal self)
    O = dropout(P) V                    (B, H, Lq, Dh)

Every score is computed and stored, which is the point: this is the O(L²) time and memory
reference that the efficient mechanisms are measured against (`softmax` is the same function
through torch's fused SDPA kernels). Causal cross holds: queries never interact.
`attend` is `cab.ops.softmax_attention` written out (with dropout between P and V), so its declared
reference is the same dense form by design: vanilla *is* the dense reference of the exact family.
FLOPs: QKᵀ 2·Lq·Lk·Dh and P·V 2·Lq·Lk·Dh per head -> 4·B·Lq·Lk·dim; the mask and softmax are
elementwise (O(B·H·Lq·Lk), not counted). A row whose keys are all padding outputs zeros.
Decode form (causal self): a KV cache (2·dim·L numbers per example); a generated token's scores against
the cache are written out as in `attend`, O(L·dim) per token.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import exact_attention_flops, kv_cache_size
from cab.ops import allowed_mask, masked_softmax, softmax_attention


@register_attention(
    "vanilla", patterns=set(Pattern),
    family="exact",
    paper={"title": "Attention Is All You Need",
           "authors": "Vaswani et al.", "venue": "NeurIPS", "year": 2017, "url": "https://arxiv.org/abs/1706.03762"},
)
class VanillaAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, dropout: float = 0.0):
        super().__init__(dim, num_heads, pattern)
        self.dropout = torch.nn.Dropout(dropout)

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        allowed = allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], self.causal)  # None, or (B|1, 1, Lq|1, Lk)
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, Lq, Lk), as softmax_attention forms them
        return self.dropout(masked_softmax(scores, allowed)) @ v  # (B, H, Lq, Dh)

    def reference_attend(self, q, k, v, key_padding_mask):
        return softmax_attention(q, k, v, allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], self.causal))

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # every score is computed, then masked: the full Lq·Lk pairs even when causal
        return exact_attention_flops(batch, len_q, len_k, self.dim, causal=False)

    def state_size(self, seq_len: int) -> int:
        return kv_cache_size(self.dim, seq_len)  # the KV cache of the decoding form

    # -- decode: a KV cache ------------------------------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x)

    def step(self, x_t, state):
        def read(q, k, v):  # q: (B, H, 1, Dh); k, v: (B, H, n, Dh), every one allowed
            scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, 1, n)
            return masked_softmax(scores, None) @ v

        return self.kv_cache_step(x_t, state, read)
