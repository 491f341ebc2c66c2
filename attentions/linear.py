"""Linear attention, "Transformers are RNNs" (Katharopoulos et al., ICML 2020).

    φ(x) = elu(x) + 1
    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)          (j over all real keys, or j <= i)

One op: `cab.ops.linear_attention` (noncausal: the sums are one Dh×(Dh+1) matrix per head, O(L·Dh²);
causal: the chunked `causal_recurrence`, never an L×L matrix). Its recurrent form carries S_i (Dh×Dh)
and z_i (Dh) per head. Causal cross holds: each query reads the same key sums, independently of the
other queries. Reference: `linear_attention_reference`, the quadratic masked form.
Decode form (causal self): S and z as one (Dh, Dh+1) matrix per head (`linear_attention_step`: z is the
last column), from the prompt's final state; O(H·Dh²) per token at any context.
"""

from __future__ import annotations

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    elu_feature_map,
    linear_attention,
    linear_attention_flops,
    linear_attention_reference,
    linear_attention_step,
)


@register_attention(
    "linear", patterns=set(Pattern),
    family="linear",
    paper={"title": "Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
           "authors": "Katharopoulos et al.", "venue": "ICML", "year": 2020, "url": "https://arxiv.org/abs/2006.16236"},
)
class LinearAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh) -> (B, H, Lq, Dh)
        return linear_attention(elu_feature_map(q), elu_feature_map(k), v, causal=self.causal,
                                key_padding_mask=key_padding_mask, eps=self.eps, chunk_size=self.chunk_size)

    def reference_attend(self, q, k, v, key_padding_mask):
        return linear_attention_reference(elu_feature_map(q), elu_feature_map(k), v, causal=self.causal,
                                          key_padding_mask=key_padding_mask, eps=self.eps)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim  # F = Dh features
        return linear_attention_flops(batch, self.num_heads, len_q, len_k, d, d, causal=self.causal,
                                      chunk_size=self.chunk_size)

    def state_size(self, seq_len: int) -> int:
        # S (Dh×Dh) and z (Dh) per head
        return self.num_heads * (self.head_dim * self.head_dim + self.head_dim)

    # -- decode: [S z] (B, H, Dh, Dh+1) ------------------------------------------------------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out, s = linear_attention(elu_feature_map(q), elu_feature_map(k), v, causal=True, eps=self.eps,
                                  chunk_size=self.chunk_size, return_final_state=True)
        return self.out_proj(self.merge_heads(out)), DecodeState(x.shape[1], s=s)

    def step(self, x_t, state):
        q, k, v = (t[:, :, 0] for t in self.self_projections(x_t))  # (B, H, Dh)
        out, state["s"] = linear_attention_step(elu_feature_map(q), elu_feature_map(k), v, state["s"], eps=self.eps)
        state.position += 1
        return self.out_proj(out.reshape(x_t.shape)), state
