"""cosFormer (Qin et al., "cosFormer: Rethinking Softmax in Attention", ICLR 2022).

Linear attention with a ReLU feature map and a cos re-weighting of the pair (i, j):

    s(q_i, k_j) = ReLU(q_i)·ReLU(k_j) · cos(π/2 · (i - j)/M)
                = ReLU(q_i)cos(πi/2M)·ReLU(k_j)cos(πj/2M) + ReLU(q_i)sin(πi/2M)·ReLU(k_j)sin(πj/2M)
    so with 2·Dh features  φ(q_i) = [ReLU(q_i)cos θ_i, ReLU(q_i)sin θ_i],  θ_i = π i / 2M
    (`cab.ops.cosformer_feature_map`), and `linear_attention`:
    O_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)        (j <= i when causal: chunked, no L×L)

The denominator is the zoo's num/(den + eps) (it was max(den, eps); both leave den >= eps untouched
up to eps/den and give 0 where no key is seen). M: noncausal, M = max(Lq, Lk) as in the paper (over
the real, unpadded lengths, so appended padding changes nothing). Causal self: the paper's M is the
total length, which leaks the future (CAB marks causal ✗); here M = `max_len`, fixed when the layer
is built, so the re-weighting does not depend on the sequence length (sequences must not exceed
max_len; cos stays >= 0 for |i-j| <= M). In a run, max_len is the task's longest sequence
(cab.run.factory.AttentionFactory), the paper's M for a fixed-length task; built directly, 16384.
Causal cross is unsupported: with M = max(Lq, Lk) each output depends on the number of queries.
Reference: the pairwise form A_ij = ReLU(q_i)·ReLU(k_j)·cos(π(i-j)/2M) as a masked Lq×Lk matrix,
O = A V / (A 1 + eps).
FLOPs: `linear_attention_flops` with F = 2·Dh features; the cos/sin weights are elementwise.
State of the recurrent form (causal): S (2Dh×Dh) and z (2Dh) per head. Decode: the token at position i
gets θ_i = πi/2M from the state's position count (up to max_len, the parallel form's bound), then one
`linear_attention_step`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    allowed_mask,
    cosformer_feature_map,
    linear_attention,
    linear_attention_flops,
    linear_attention_step,
)


@register_attention(
    "cosformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_CROSS},
    unsupported={
        Pattern.CAUSAL_CROSS: "the cos re-weighting uses M = max(Lq, Lk), so each output depends on the number of queries",
    },
    family="linear",
    paper={"title": "cosFormer: Rethinking Softmax in Attention",
           "authors": "Qin et al.", "venue": "ICLR", "year": 2022, "url": "https://arxiv.org/abs/2202.08791"},
)
class CosformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, max_len: int = 16384,
                 chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.max_len = max_len
        self.chunk_size = chunk_size

    def horizon(self, batch: int, len_q: int, len_k: int, key_padding_mask, device) -> torch.Tensor:
        """M per example, (B,) float64: max_len (causal), else max of the real query and key lengths."""
        if self.causal:
            if len_q > self.max_len:
                raise ValueError(f"cosformer causal: length {len_q} exceeds max_len {self.max_len}")
            return torch.full((batch,), float(self.max_len), device=device, dtype=torch.float64)
        if key_padding_mask is None:
            real_k = torch.full((batch,), float(len_k), device=device, dtype=torch.float64)
        else:  # last real key + 1: appended padding does not move M
            pos_k = torch.arange(1, len_k + 1, device=device, dtype=torch.float64)
            real_k = torch.where(~key_padding_mask, pos_k, torch.zeros_like(pos_k)).amax(dim=1)
        real_q = real_k if not self.pattern.is_cross else torch.full_like(real_k, float(len_q))
        return torch.maximum(torch.maximum(real_q, real_k), torch.ones_like(real_k))

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        b, _, len_q, _ = q.shape
        len_k = k.shape[-2]
        m = self.horizon(b, len_q, len_k, key_padding_mask, q.device)  # (B,)
        phi_q = cosformer_feature_map(q, torch.arange(len_q, device=q.device), m)  # (B, H, Lq, 2Dh)
        phi_k = cosformer_feature_map(k, torch.arange(len_k, device=q.device), m)  # (B, H, Lk, 2Dh)
        return linear_attention(phi_q, phi_k, v, causal=self.causal, key_padding_mask=key_padding_mask, eps=self.eps,
                                chunk_size=self.chunk_size)

    def reference_attend(self, q, k, v, key_padding_mask):
        b, _, len_q, _ = q.shape
        len_k = k.shape[-2]
        m = self.horizon(b, len_q, len_k, key_padding_mask, q.device)[:, None, None, None]  # (B, 1, 1, 1)
        i = torch.arange(len_q, device=q.device, dtype=torch.float64)[:, None]
        j = torch.arange(len_k, device=q.device, dtype=torch.float64)[None, :]
        a = (F.relu(q) @ F.relu(k).transpose(-1, -2)) * torch.cos(math.pi / 2 * (i - j) / m).to(q.dtype)
        allowed = allowed_mask(key_padding_mask, len_q, len_k, self.causal, q.device)
        if allowed is not None:
            a = a.masked_fill(~allowed, 0.0)  # (B, H, Lq, Lk)
        return (a @ v) / (a.sum(-1, keepdim=True) + self.eps)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        return linear_attention_flops(batch, self.num_heads, len_q, len_k, 2 * d, d, causal=self.causal,
                                      chunk_size=self.chunk_size)

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        return self.num_heads * (2 * self.head_dim * self.head_dim + 2 * self.head_dim)

    # -- decode: [S z] (B, H, 2Dh, Dh+1); the position gives θ ------------------------------------
    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        q, k, v = self.self_projections(x)
        m = self.horizon(b, length, length, None, x.device)  # max_len (checks the prompt fits)
        positions = torch.arange(length, device=x.device)
        phi_q, phi_k = cosformer_feature_map(q, positions, m), cosformer_feature_map(k, positions, m)
        out, s = linear_attention(phi_q, phi_k, v, causal=True, eps=self.eps, chunk_size=self.chunk_size,
                                  return_final_state=True)
        return self.out_proj(self.merge_heads(out)), DecodeState(length, s=s)

    def step(self, x_t, state):
        position = state.position  # of this token, 0-based
        if position >= self.max_len:
            raise ValueError(f"cosformer causal: position {position} is past max_len {self.max_len} "
                             f"(the re-weighting's horizon M)")
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        at = torch.full((1,), position, device=x_t.device)
        phi_q = cosformer_feature_map(q, at, float(self.max_len))[:, :, 0]  # (B, H, 2Dh)
        phi_k = cosformer_feature_map(k, at, float(self.max_len))[:, :, 0]
        out, state["s"] = linear_attention_step(phi_q, phi_k, v[:, :, 0], state["s"], eps=self.eps)
        state.position += 1
        return self.out_proj(out.reshape(x_t.shape)), state
