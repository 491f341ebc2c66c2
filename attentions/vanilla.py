"""Vanilla softmax attention, written out (Vaswani et al., "Attention Is All You Need", NeurIPS 2017).

CAB's "vanilla" (fairseq-style `MultiheadAttention`): the quadratic baseline for efficiency lengths.

    S = Q Kᵀ / √Dh                      (B, H, Lq, Lk)   -- materialised: O(Lq·Lk) memory by design
    S[padding] = -inf; causal self: S[i, j>i] = -inf
    P = softmax(S, dim=-1)              (B, H, Lq, Lk)
    O = P V                             (B, H, Lq, Dh)

Every score is computed and stored, which is the point: this is the O(L²) time and memory
reference that the efficient mechanisms are measured against (`softmax` is the same function
through torch's fused SDPA kernels). Causal cross holds: queries never interact.
FLOPs: QKᵀ 2·Lq·Lk·Dh and P·V 2·Lq·Lk·Dh per head -> 4·B·Lq·Lk·dim; the mask and softmax are
elementwise (O(B·H·Lq·Lk), not counted). A row whose keys are all padding outputs zeros.
"""

from __future__ import annotations

import torch

from cab.attention import exact_attention_flops, kv_cache_size
from cab import MultiHeadAttention, Pattern, register_attention


@register_attention("vanilla", patterns=set(Pattern))
class VanillaAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, dropout: float = 0.0):
        super().__init__(dim, num_heads, pattern)
        self.dropout = torch.nn.Dropout(dropout)

    def attend(self, q, k, v, key_padding_mask):
        len_q, len_k = q.shape[-2], k.shape[-2]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2)  # (B, H, Lq, Lk)
        masked = None
        if key_padding_mask is not None:
            masked = key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if self.causal:
            future = torch.ones(len_q, len_k, dtype=torch.bool, device=q.device).triu(1)  # j > i
            masked = future if masked is None else masked | future
        if masked is not None:
            scores = scores.masked_fill(masked, float("-inf"))
        probs = torch.softmax(scores, dim=-1)  # (B, H, Lq, Lk)
        if masked is not None:
            probs = probs.nan_to_num(0.0)  # rows with every key masked
        return self.dropout(probs) @ v  # (B, H, Lq, Dh)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # every score is computed, then masked: the full Lq·Lk pairs even when causal
        return exact_attention_flops(batch, len_q, len_k, self.dim, causal=False)

    def state_size(self, seq_len: int) -> int:
        return kv_cache_size(self.dim, seq_len)  # the KV cache of the decoding form
