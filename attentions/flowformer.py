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
product is the causal linear attention `cab.kernels.causal_linear_attention`. The per-position flow
dot products (φ(q_i)·prefix sums) are elementwise work (≈10·L·Dh per head), not counted as FLOPs.

Patterns: noncausal self and cross natively (L ≠ S allowed). Causal cross is not: O_j and the
competition sum over all queries, so an output depends on later queries. Padding: padded keys (and
in self, the padded positions as queries) are removed from every flow sum, and m, n count only the
real positions. Recurrent form (causal): per head Σφ(k), Σφ(q), Σφ(k)/O, Σφ(q)/I (4·Dh), the
competition normaliser Σexp(Ô) (1), the position count (1) and S = Σ φ(k)(V̂)ᵀ (Dh²):
state_size = H·(Dh² + 4·Dh + 1) + 1.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.kernels import causal_linear_attention, causal_linear_flops


@register_attention(
    "flowformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_CROSS: "source outgoing flow and competition sum over all queries, so outputs depend on later queries"},
)
class FlowAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        q, k = torch.sigmoid(q), torch.sigmoid(k)
        keep_k = None if key_padding_mask is None else (~key_padding_mask)[:, None, :, None].to(q.dtype)  # (B,1,Lk,1)
        keep_q = keep_k if not self.pattern.is_cross else None  # self: padded positions are no sinks either
        if keep_k is not None:
            k = k * keep_k
        if keep_q is not None:
            q = q * keep_q
        if self.causal:
            return self._causal(q, k, v, keep_k)
        return self._noncausal(q, k, v, keep_q, keep_k)

    def _noncausal(self, q, k, v, keep_q, keep_k):
        eps = self.eps
        n_q = q.new_full((1, 1, 1), q.shape[-2]) if keep_q is None else keep_q.sum(dim=2)  # (B|1, 1, 1)
        n_k = k.new_full((1, 1, 1), k.shape[-2]) if keep_k is None else keep_k.sum(dim=2)
        # (1) incoming and outgoing flows: matrix-vector products, (B, H, L)
        sink_in = 1.0 / ((q + eps) @ (k.sum(2) + eps)[..., None]).squeeze(-1)  # (B, H, Lq)
        source_out = 1.0 / ((k + eps) @ (q.sum(2) + eps)[..., None]).squeeze(-1)  # (B, H, Lk)
        # (2) conservation
        cons_sink = ((q + eps) @ ((k * source_out[..., None]).sum(2) + eps)[..., None]).squeeze(-1)
        cons_source = ((k + eps) @ ((q * sink_in[..., None]).sum(2) + eps)[..., None]).squeeze(-1)
        cons_source = cons_source.clamp(-1.0, 1.0)
        # (3) competition (over real keys) and allocation
        alloc = torch.sigmoid(cons_sink * (n_q / n_k))  # (B, H, Lq)
        if keep_k is not None:
            cons_source = cons_source.masked_fill(keep_k[..., 0] == 0, float("-inf"))
        competition = torch.softmax(cons_source, dim=-1) * n_k  # (B, H, Lk)
        # (4) aggregation: Kᵀ(V ⊙ competition) then Q·that, (B, H, Dh, Dh) state
        kv = k.transpose(-1, -2) @ (v * competition[..., None])
        return (q * sink_in[..., None]) @ kv * alloc[..., None]

    def _causal(self, q, k, v, keep):
        eps = self.eps
        length = q.shape[-2]
        if keep is None:
            normal = torch.arange(1, length + 1, dtype=q.dtype, device=q.device)[None, None, :]  # (1, 1, L)
        else:
            normal = keep[..., 0].cumsum(-1).clamp(min=1.0)  # (B, 1, L): positions seen so far
        sink_in = normal / ((q + eps) * (k.cumsum(2) + eps)).sum(-1)  # (B, H, L)
        source_out = normal / ((k + eps) * (q.cumsum(2) + eps)).sum(-1)
        cons_sink = ((q + eps) * ((k * source_out[..., None]).cumsum(2) + eps)).sum(-1) / normal
        cons_source = ((k + eps) * ((q * sink_in[..., None]).cumsum(2) + eps)).sum(-1) / normal
        cons_source = cons_source.clamp(-1.0, 1.0)
        alloc = torch.sigmoid(cons_sink)
        expo = torch.exp(cons_source)
        if keep is not None:
            expo = expo * keep[..., 0]
        competition = expo / expo.cumsum(-1).clamp(min=eps) * normal  # (B, H, L)
        out = causal_linear_attention(q * (sink_in / normal)[..., None], k, v * competition[..., None], self.chunk_size)
        return out * alloc[..., None]

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if self.causal:
            return causal_linear_flops(batch, h, len_q, d, d, self.chunk_size)
        flows = 2 * d * (2 * len_q + 2 * len_k)  # four matrix-vector flow products
        return batch * h * (flows + 2 * len_k * d * d + 2 * len_q * d * d)

    def state_size(self, seq_len: int) -> int:
        d = self.head_dim
        return self.num_heads * (d * d + 4 * d + 1) + 1
