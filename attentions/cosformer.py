"""cosFormer (Qin et al., "cosFormer: Rethinking Softmax in Attention", ICLR 2022).

Linear attention with a ReLU feature map and a cos re-weighting of the pair (i, j):

    s(q_i, k_j) = ReLU(q_i)·ReLU(k_j) · cos(π/2 · (i - j)/M)
                = ReLU(q_i)cos(πi/2M)·ReLU(k_j)cos(πj/2M) + ReLU(q_i)sin(πi/2M)·ReLU(k_j)sin(πj/2M)
    so with 2·Dh features  φ(q_i) = [ReLU(q_i)cos θ_i, ReLU(q_i)sin θ_i],  θ_i = π i / 2M:
    noncausal:  O_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / max(φ(q_i)ᵀ Σ_j φ(k_j), eps)    (O(L·Dh²))
    causal:     the same with j <= i, in the chunked form of `cab.kernels.causal_linear_attention`

M: noncausal, M = max(Lq, Lk) as in the paper (over the real, unpadded lengths, so appended
padding changes nothing). Causal self: the paper's M is the total length, which leaks the future
(CAB marks causal ✗); here M = `max_len`, fixed when the layer is built, so the re-weighting does
not depend on the sequence length (sequences must not exceed max_len; cos stays >= 0 for
|i-j| <= M). In a run, max_len is the task's longest sequence (cab.task.AttentionFactory), the
paper's M for a fixed-length task; built directly, 16384.
Causal cross is unsupported: with M = max(Lq, Lk) each output depends on the number of queries.
FLOPs per head: noncausal 2·Lk·2Dh·(Dh+1) + 2·Lq·2Dh·(Dh+1); causal
`causal_linear_flops(L, 2Dh, Dh+1, C)`; the cos/sin weights are elementwise.
State of the recurrent form (causal): S (2Dh×Dh) and z (2Dh) per head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.kernels import causal_linear_attention, causal_linear_flops


@register_attention(
    "cosformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_CROSS},
    unsupported={
        Pattern.CAUSAL_CROSS: "the cos re-weighting uses M = max(Lq, Lk), so each output depends on the number of queries",
    },
)
class CosformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, eps: float = 1e-6, max_len: int = 16384,
                 chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.eps = eps
        self.max_len = max_len
        self.chunk_size = chunk_size

    @staticmethod
    def _features(x: torch.Tensor, pos: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x: (B, H, L, Dh); pos: (L,); m: (B,) -> (B, H, L, 2Dh)."""
        theta = (math.pi / 2) * pos[None, :] / m[:, None]  # (B, L)
        theta = theta[:, None, :, None].to(x.dtype)
        r = F.relu(x)
        return torch.cat([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)

    def attend(self, q, k, v, key_padding_mask):
        b, _, len_q, _ = q.shape
        len_k = k.shape[-2]
        dev = q.device
        pos_q = torch.arange(len_q, device=dev, dtype=torch.float64)
        pos_k = torch.arange(len_k, device=dev, dtype=torch.float64)
        if self.causal:
            if len_q > self.max_len:
                raise ValueError(f"cosformer causal: length {len_q} exceeds max_len {self.max_len}")
            m = torch.full((b,), float(self.max_len), device=dev, dtype=torch.float64)
        else:
            if key_padding_mask is None:
                real_k = torch.full((b,), float(len_k), device=dev, dtype=torch.float64)
            else:  # last real key + 1: appended padding does not move M
                real_k = torch.where(~key_padding_mask, pos_k + 1, torch.zeros_like(pos_k)).amax(dim=1)
            real_q = real_k if not self.pattern.is_cross else torch.full_like(real_k, float(len_q))
            m = torch.maximum(torch.maximum(real_q, real_k), torch.ones_like(real_k))
        phi_q = self._features(q, pos_q, m)  # (B, H, Lq, 2Dh)
        phi_k = self._features(k, pos_k, m)  # (B, H, Lk, 2Dh)
        if key_padding_mask is not None:
            phi_k = phi_k.masked_fill(key_padding_mask[:, None, :, None], 0.0)
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, Lk, Dh+1)
        if self.causal:
            num_den = causal_linear_attention(phi_q, phi_k, v1, self.chunk_size)
        else:
            num_den = phi_q @ (phi_k.transpose(-1, -2) @ v1)  # (B, H, Lq, Dh+1)
        return num_den[..., :-1] / num_den[..., -1:].clamp_min(self.eps)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h = self.head_dim, self.num_heads
        if self.causal:
            return causal_linear_flops(batch, h, len_q, 2 * d, d + 1, self.chunk_size)
        return batch * h * (2 * len_k * 2 * d * (d + 1) + 2 * len_q * 2 * d * (d + 1))

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        return self.num_heads * (2 * self.head_dim * self.head_dim + 2 * self.head_dim)
