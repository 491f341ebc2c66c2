"""Flow-Attention (Wu et al., ICML 2022, "Flowformer: Linearizing Transformers with Conservation
Flows"; thuml/Flowformer `Flow_Attention.py`).

Attention as a flow network: keys are sources, queries are sinks, φ = sigmoid. With φ(q), φ(k):

    I_i = φ(q_i)·Σ_j φ(k_j)              incoming flow of sink i      (sink_incoming = 1/I)
    O_j = φ(k_j)·Σ_i φ(q_i)              outgoing flow of source j    (source_outgoing = 1/O)
    Î_i = φ(q_i)·Σ_j φ(k_j)/O_j          conserved incoming flow  (outgoing flow fixed to 1)
    Ô_j = φ(k_j)·Σ_i φ(q_i)/I_i          conserved outgoing flow  (incoming flow fixed to 1)
    competition  V̂ = softmax_j(Ô_j)·m ⊙ V           (sources compete; m = number of keys)
    allocation   out_i = sigmoid(Î_i·n/m) · φ(q_i)ᵀ(Σ_j φ(k_j) V̂_jᵀ) / I_i

All of it is O((n + m)·Dh²): no L×L. Causal form (the repository's `Flow_Attention_Causal`): every
sum over positions becomes a prefix sum, the flows are rescaled by the number of positions seen
(i+1), competition is exp(Ô_j)/Σ_{s<=i} exp(Ô_s)·(i+1), allocation has no n/m factor, and the final
product is the causal un-normalised linear attention (`cab.ops.linear_attention`, normalize=False:
the chunked `causal_recurrence`). The per-position flow dot products (φ(q_i)·prefix sums) are
batched products (counted: 4·2·L·Dh per head); the prefix sums, the +eps and the other elementwise
work (≈20 passes over (L, Dh) per head) are not FLOPs but take about as long as the layer's
projections: at 16,384 tokens (dim 512, 8 heads, one thread) the causal layer runs at ≈35-40% of
the machine's matmul rate, short of the zoo's 40% target, which its algorithm (every flow is a
per-position prefix statistic) cannot reach. Flowformer's own normalisations (the flows, the
position counts, the competition) stay here: no other mechanism has them.
Reference: every prefix sum written as a masked L×L product (a lower-triangular matrix over the real
positions) and the aggregation in its quadratic form (`linear_attention_reference`); noncausal, the
same flows with the quadratic aggregation.

Patterns: noncausal self and cross natively (L ≠ S allowed). Causal cross is not: O_j and the
competition sum over all queries, so an output depends on later queries. Padding: padded keys (and
in self, the padded positions as queries) are removed from every flow sum, and m, n count only the
real positions. Recurrent form (causal): per head Σφ(k), Σφ(q), Σφ(k)/O, Σφ(q)/I (4·Dh), the
competition normaliser Σexp(Ô) (1), the position count (1) and S = Σ φ(k)(V̂)ᵀ (Dh²):
state_size = H·(Dh² + 4·Dh + 1) + 1. Decode: the prefix sums of the causal form, advanced by one
position (each flow of the new token reads the sums that include it), O(H·Dh²) per token.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    causal_mask,
    keep_mask,
    linear_attention,
    linear_attention_flops,
    linear_attention_reference,
    masked_softmax,
    zero_padding,
)


@register_attention(
    "flowformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_CROSS: "source outgoing flow and competition sum over all queries, so outputs depend on later queries"},
    family="linear",
    paper={"title": "Flowformer: Linearizing Transformers with Conservation Flows",
           "authors": "Wu et al.", "venue": "ICML", "year": 2022, "url": "https://arxiv.org/abs/2202.06258"},
)
class FlowAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        return self._flow(q, k, v, key_padding_mask, reference=False)

    def reference_attend(self, q, k, v, key_padding_mask):
        return self._flow(q, k, v, key_padding_mask, reference=True)

    def _flow(self, q, k, v, key_padding_mask, reference):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh); φ = sigmoid, padded keys (self: and queries) removed
        q, k = torch.sigmoid(q), zero_padding(torch.sigmoid(k), key_padding_mask)
        if not self.pattern.is_cross:  # self: padded positions are no sinks either
            q = zero_padding(q, key_padding_mask)
        if self.causal:
            return self._causal(q, k, v, key_padding_mask, reference)
        return self._noncausal(q, k, v, key_padding_mask, reference)

    def _aggregate(self, q, k, v, reference):
        """Σ_j (q_i·k_j) v_j over all keys, or j <= i when causal: (B, H, Lq, Dh)."""
        if reference:
            return linear_attention_reference(q, k, v, causal=self.causal, normalize=False)
        return linear_attention(q, k, v, causal=self.causal, normalize=False, chunk_size=self.chunk_size)

    def _noncausal(self, q, k, v, key_padding_mask, reference):
        eps = self.eps
        keep_k = None if key_padding_mask is None else ~key_padding_mask[:, None, :]  # (B, 1, Lk)
        keep_q = keep_k if not self.pattern.is_cross else None
        n_q = q.new_full((1, 1, 1), q.shape[-2]) if keep_q is None else keep_q.sum(-1, keepdim=True).to(q.dtype)
        n_k = k.new_full((1, 1, 1), k.shape[-2]) if keep_k is None else keep_k.sum(-1, keepdim=True).to(k.dtype)
        # (1) incoming and outgoing flows: matrix-vector products, (B, H, L)
        sink_in = 1.0 / ((q + eps) @ (k.sum(2) + eps)[..., None]).squeeze(-1)  # (B, H, Lq)
        source_out = 1.0 / ((k + eps) @ (q.sum(2) + eps)[..., None]).squeeze(-1)  # (B, H, Lk)
        # (2) conservation
        cons_sink = ((q + eps) @ ((k * source_out[..., None]).sum(2) + eps)[..., None]).squeeze(-1)
        cons_source = ((k + eps) @ ((q * sink_in[..., None]).sum(2) + eps)[..., None]).squeeze(-1)
        cons_source = cons_source.clamp(-1.0, 1.0)
        # (3) competition (a softmax over the real keys) and allocation
        alloc = torch.sigmoid(cons_sink * (n_q / n_k))  # (B, H, Lq)
        competition = masked_softmax(cons_source, keep_k) * n_k  # (B, H, Lk)
        # (4) aggregation: φ(Q)ᵀ(φ(K)ᵀ(V ⊙ competition)), a (Dh, Dh) state per head
        return self._aggregate(q * sink_in[..., None], k, v * competition[..., None], reference) * alloc[..., None]

    def _causal(self, q, k, v, key_padding_mask, reference, return_state=False):
        """The causal flows as prefix sums; return_state: also the sums over all positions (the decode state)."""
        eps = self.eps
        b, _, length, _ = q.shape
        if reference:  # Σ_{j <= i} over real j as an L×L lower-triangular product (padded rows are zero)
            tri = causal_mask(length, length, q.device).to(q.dtype)

            def prefix(x):  # (B, H, L, X) -> (B, H, L, X)
                return tri @ x
        else:
            def prefix(x):
                return x.cumsum(2)

        def dot(a, b):  # per-position dot product (B, H, L, D) x2 -> (B, H, L): a batched matmul, no L×D temporary
            return torch.einsum("bhld,bhld->bhl", a, b)

        keep = keep_mask(key_padding_mask, b, length, q.device)[:, None, :, None].to(q.dtype)  # (B, 1, L, 1)
        normal = prefix(keep)[..., 0].clamp(min=1.0)  # (B, 1, L): positions seen so far
        q_eps, k_eps = q + eps, k + eps
        sink_in = normal / dot(q_eps, prefix(k) + eps)  # (B, H, L)
        source_out = normal / dot(k_eps, prefix(q) + eps)
        cons_sink = dot(q_eps, prefix(k * source_out[..., None]) + eps) / normal
        cons_source = (dot(k_eps, prefix(q * sink_in[..., None]) + eps) / normal).clamp(-1.0, 1.0)
        alloc = torch.sigmoid(cons_sink)
        expo = torch.exp(cons_source) * keep[..., 0]  # (B, H, L), 0 at padding
        competition = expo / prefix(expo[..., None])[..., 0].clamp(min=eps) * normal  # (B, H, L)
        out = self._aggregate(q * (sink_in / normal)[..., None], k, v * competition[..., None], reference)
        if not return_state:
            return out * alloc[..., None]
        state = dict(sk=k.sum(2), sq=q.sum(2), sko=(k * source_out[..., None]).sum(2),  # (B, H, Dh) each
                     sqi=(q * sink_in[..., None]).sum(2), zexp=expo.sum(2),  # (B, H)
                     s=k.transpose(-1, -2) @ (v * competition[..., None]),  # Σ φ(k) V̂ᵀ: (B, H, Dh, Dh)
                     count=normal[:, 0, -1:].expand(b, 1).clone())  # (B, 1) positions seen
        return out * alloc[..., None], state

    # -- decode: the prefix sums of the causal flows -----------------------------------------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out, sums = self._causal(torch.sigmoid(q), torch.sigmoid(k), v, None, reference=False, return_state=True)
        return self.out_proj(self.merge_heads(out)), DecodeState(x.shape[1], **sums)

    def step(self, x_t, state):
        eps, c = self.eps, state
        q, k, v = (t[:, :, 0] for t in self.self_projections(x_t))  # (B, H, Dh)
        q, k = torch.sigmoid(q), torch.sigmoid(k)
        c["count"] = n = c["count"] + 1  # (B, 1): positions seen, this one included
        c["sk"], c["sq"] = c["sk"] + k, c["sq"] + q
        sink_in = n / ((q + eps) * (c["sk"] + eps)).sum(-1)  # (B, H)
        source_out = n / ((k + eps) * (c["sq"] + eps)).sum(-1)
        c["sko"], c["sqi"] = c["sko"] + k * source_out[..., None], c["sqi"] + q * sink_in[..., None]
        cons_sink = ((q + eps) * (c["sko"] + eps)).sum(-1) / n
        cons_source = (((k + eps) * (c["sqi"] + eps)).sum(-1) / n).clamp(-1.0, 1.0)
        expo = torch.exp(cons_source)
        c["zexp"] = c["zexp"] + expo
        competition = expo / c["zexp"].clamp(min=eps) * n  # (B, H)
        c["s"] = c["s"] + k[..., :, None] * (v * competition[..., None])[..., None, :]  # + φ(k) V̂ᵀ
        out = ((q * (sink_in / n)[..., None])[..., None, :] @ c["s"])[..., 0, :]  # (B, H, Dh)
        c.position += 1
        return self.out_proj((out * torch.sigmoid(cons_sink)[..., None]).reshape(x_t.shape)), c

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        aggregate = linear_attention_flops(batch, h, len_q, len_k, d, d, causal=self.causal, normalize=False,
                                           chunk_size=self.chunk_size)
        # + the four flow products: matrix-vector (noncausal) or per-position dot products (causal), 2·L·Dh each
        return batch * h * 2 * d * (2 * len_q + 2 * len_k) + aggregate

    def state_size(self, seq_len: int) -> int:
        d = self.head_dim
        return self.num_heads * (d * d + 4 * d + 1) + 1
