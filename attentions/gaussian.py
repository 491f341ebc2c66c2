"""Gaussian Adaptive Attention, GAAM (Ioannides et al., 2024, "Gaussian Adaptive Attention is All
You Need: Robust Contextual Representations Across Multiple Modalities";
gioannides/Gaussian-Adaptive-Attention).

No query·key products: each feature is re-weighted by how typical its value is along the sequence,
under a product of G learnable Gaussians. Per head h (a group of Dh features) and feature f:

    μ, σ²    = mean and (unbiased) variance of x_f over the sequence       (norm_axis = sequence)
    y_g      = (x_f - (μ + δ_hg)) / √(σ² + eps)                            # learnable mean offsets δ
    m        = Π_g N(y_g; 0, c_hg²) = Π_g exp(-y_g²/(2c_hg²)) / √(2π c_hg²)  # learnable scales c
    w_i      = m_i / Σ_j m_j                                                # normalised along the sequence
    out_i    = x_i ⊙ w_i

computed in log space (Σ_g log N, then a softmax over positions) for stability. Here the layer
applies GAAM to a value projection and ends with an output projection, like the other layers.
Causal self uses prefix statistics: μ_i, σ²_i from positions <= i (running Σx, Σx²), and the
normaliser Σ_{j<=i} m_j with each m_j computed from its own prefix statistics (a logcumsumexp).
Cost: the projections (4·L·dim² FLOPs, `flops`) plus ≈(6G + 10)·L·dim elementwise operations for the
weights, not matrix products. Memory O(L·dim), no L×L.
Differences from the reference: heads split the feature axis (the reference splits the norm axis
into chunks); c starts at 1 (the reference draws N(0, 1), which can start near 0).
Padding: padded positions are left out of the statistics and the normalisation.
Recurrent form (causal): Σx, Σx² and the running log Σ m per feature, plus the count:
state_size = 3·dim + 1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import AttentionLayer, Pattern, register_attention

_NO_CROSS = "GAAM has no queries and keys: it re-weights one sequence by its own statistics"


@register_attention(
    "gaussian",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class GaussianAdaptiveAttention(AttentionLayer):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_gaussians: int = 4, eps: float = 1e-8):
        super().__init__(dim, num_heads, pattern)
        self.num_gaussians = num_gaussians
        self.eps = eps
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.mean_offsets = nn.Parameter(torch.zeros(num_heads, num_gaussians))  # δ
        self.scales = nn.Parameter(torch.ones(num_heads, num_gaussians))  # c

    def log_density(self, x, mean, var):
        """x, mean, var: (B, L|1, H, Dh) -> Σ_g log N(y_g; 0, c_g²), (B, L, H, Dh)."""
        out = 0.0
        for g in range(self.num_gaussians):
            offset = self.mean_offsets[:, g].to(x.dtype)[:, None]  # (H, 1)
            c2 = self.scales[:, g].to(x.dtype)[:, None].square()
            y = (x - (mean + offset)) / torch.sqrt(var + self.eps)
            out = out - y.square() / (2.0 * c2) - 0.5 * torch.log(2.0 * math.pi * c2)
        return out

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        b, length, _ = x.shape
        v = self.v_proj(x).view(b, length, self.num_heads, self.head_dim)  # (B, L, H, Dh)
        keep = torch.ones(b, length, 1, 1, dtype=x.dtype, device=x.device)
        if key_padding_mask is not None:
            keep = (~key_padding_mask)[:, :, None, None].to(x.dtype)
        vk = v * keep
        if self.causal:
            count = keep.cumsum(1)  # (B, L, 1, 1)
            mean = vk.cumsum(1) / count.clamp(min=1.0)
            var = ((vk.square().cumsum(1) - count * mean.square()) / (count - 1).clamp(min=1.0)).clamp(min=0.0)
            logm = self.log_density(v, mean, var).masked_fill(keep == 0, float("-inf"))
            weights = torch.exp(logm - torch.logcumsumexp(logm, dim=1))  # m_i / Σ_{j<=i} m_j
        else:
            count = keep.sum(1, keepdim=True)  # (B, 1, 1, 1)
            mean = vk.sum(1, keepdim=True) / count.clamp(min=1.0)
            var = ((v - mean).square() * keep).sum(1, keepdim=True) / (count - 1).clamp(min=1.0)
            logm = self.log_density(v, mean, var).masked_fill(keep == 0, float("-inf"))
            weights = torch.softmax(logm, dim=1)  # normalised along the sequence
        weights = torch.where(keep > 0, weights, torch.zeros_like(weights))  # padded positions: 0, never NaN
        return self.out_proj((v * weights).reshape(b, length, self.dim))

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        return 2 * batch * len_q * self.dim * self.dim * 2  # value and output projections

    def state_size(self, seq_len: int) -> int:
        return 3 * self.dim + 1
