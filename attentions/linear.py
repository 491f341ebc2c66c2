"""Linear attention, "Transformers are RNNs" (Katharopoulos et al., ICML 2020).

    φ(x) = elu(x) + 1
    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j))          (j over all keys, or j <= i)

Noncausal: the sums are one D×Dv matrix and one D vector per head, O(L·D·Dv).
Causal: the chunked form of `cab.kernels.causal_linear_attention` (never an L×L matrix); its
recurrent form carries S_i (Dh×Dh) and z_i (Dh) per head. Causal cross holds: each query reads
the same key sums, independently of the other queries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import zero_padded_keys
from cab.kernels import causal_linear_attention, causal_linear_flops


@register_attention("linear", patterns=set(Pattern))
class LinearAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        phi_q = F.elu(q) + 1  # (B, H, Lq, Dh)
        phi_k = zero_padded_keys(F.elu(k) + 1, key_padding_mask)  # (B, H, Lk, Dh); padding adds 0
        ones = torch.ones_like(v[..., :1])
        v1 = torch.cat([v, ones], dim=-1)  # (B, H, Lk, Dh+1): last column accumulates the normaliser
        if self.causal:
            num_den = causal_linear_attention(phi_q, phi_k, v1, self.chunk_size)  # (B, H, L, Dh+1)
        else:
            kv = phi_k.transpose(-1, -2) @ v1  # (B, H, Dh, Dh+1)
            num_den = phi_q @ kv  # (B, H, Lq, Dh+1)
        return num_den[..., :-1] / (num_den[..., -1:] + self.eps)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if self.causal:
            return causal_linear_flops(batch, h, len_q, d, d + 1, self.chunk_size) + batch * len_q * self.dim
        # φ(K)ᵀ[V 1]: 2·Lk·Dh·(Dh+1); φ(Q)·that: 2·Lq·Dh·(Dh+1); the division: Lq·Dh, per head.
        return batch * h * (2 * len_k * d * (d + 1) + 2 * len_q * d * (d + 1) + len_q * d)

    def state_size(self, seq_len: int) -> int:
        # S (Dh×Dh) and z (Dh) per head
        return self.num_heads * (self.head_dim * self.head_dim + self.head_dim)
