"""Exact softmax attention through torch's `scaled_dot_product_attention` (Vaswani et al., 2017).

softmax(Q Kᵀ / √Dh + mask) V, computed by whichever SDPA backend torch picks for the device
(flash / memory-efficient on GPU, a fused kernel on CPU). This is the exact baseline every
efficient mechanism is compared with. Causal cross holds for free: queries never interact.
Reference: the dense masked form, `cab.ops.softmax_attention` with the same `allowed_mask`.
Decode form (causal self): a KV cache, every key and value so far (2·dim·L numbers per example): each
generated token reads the whole cache through SDPA, O(L·dim) per token.
"""

from __future__ import annotations

import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import exact_attention_flops, kv_cache_size
from cab.ops import allowed_mask, sdpa_mask, softmax_attention


@register_attention(
    "softmax", patterns=set(Pattern),
    family="exact",
    paper={"title": "Attention Is All You Need",
           "authors": "Vaswani et al.", "venue": "NeurIPS", "year": 2017, "url": "https://arxiv.org/abs/1706.03762"},
)
class SoftmaxAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, dropout: float = 0.0):
        super().__init__(dim, num_heads, pattern)
        self.dropout = dropout

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh) -> (B, H, Lq, Dh)
        mask, is_causal = sdpa_mask(key_padding_mask, self.causal, q.shape[-2], k.shape[-2], q.device)
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)

    def reference_attend(self, q, k, v, key_padding_mask):
        return softmax_attention(q, k, v, allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], self.causal))

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # QKᵀ and (softmax)·V; causal: the unmasked pairs only, since SDPA's fused kernels skip the
        # blocks above the diagonal. softmax's exp/sum are not matrix products.
        return exact_attention_flops(batch, len_q, len_k, self.dim, self.causal)

    def skipped_masked_flops(self, batch: int, len_q: int, len_k: int) -> int:
        return exact_attention_flops(batch, len_q, len_k, self.dim, False) - self.core_flops(batch, len_q, len_k)

    def state_size(self, seq_len: int) -> int:
        return kv_cache_size(self.dim, seq_len)  # the KV cache of the decoding form

    # -- decode: a KV cache ------------------------------------------------------------------------
    def prefill(self, x):
        return self.kv_cache_prefill(x)

    def step(self, x_t, state):
        # the new query reads every cached key (and its own): no mask
        return self.kv_cache_step(x_t, state, lambda q, k, v: F.scaled_dot_product_attention(q, k, v))
