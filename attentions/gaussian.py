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
Padding: padded positions are left out of the statistics and the normalisation (`causal_prefix_mean`
over the real tokens; `masked_softmax` along the sequence).
Reference (`reference_forward`): noncausal, the statistics of each example's real tokens by torch.var and
a softmax over them; causal, the step-by-step recurrence below.
Recurrent form (causal): Σx, Σx² and the running log Σ m per feature, plus the count:
state_size = 3·dim + 1. Decode: that recurrence, one token at a time (O(G·dim) per token); prefill
takes the sums over the prompt and log Σ m from its parallel form.
Throughput (benchmarks/results/kernel_throughput.md): causal runs below 40% of the matmul rate: its
running statistics are logcumsumexp and cumulative sums per feature, elementwise work that is not matrix products.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import AttentionLayer, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import causal_prefix_mean, keep_mask, masked_softmax

_NO_CROSS = "GAAM has no queries and keys: it re-weights one sequence by its own statistics"


@register_attention(
    "gaussian",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="attention-free",
    paper={"title": "Gaussian Adaptive Attention is All You Need: Robust Contextual Representations Across Multiple Modalities",
           "authors": "Ioannides et al.", "venue": "arXiv", "year": 2024, "url": "https://arxiv.org/abs/2401.11143"},
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
        keep = keep_mask(key_padding_mask, b, length, x.device)  # (B, L)
        real = keep[:, :, None, None]  # (B, L, 1, 1)
        if self.causal:  # μ_i, σ²_i of the real tokens <= i; w_i = m_i / Σ_{j<=i} m_j
            real_only = None if key_padding_mask is None else keep  # None: every token counts (no mask product)
            count = torch.cumsum(keep.to(x.dtype), dim=1)[:, :, None, None]  # (B, L, 1, 1) real tokens <= i
            mean = causal_prefix_mean(v, real_only, dim=1)  # (B, L, H, Dh)
            mean_square = causal_prefix_mean(v.square(), real_only, dim=1)
            var = count * (mean_square - mean.square()) / (count - 1).clamp(min=1.0)  # unbiased
            logm = self.log_density(v, mean, var.clamp(min=0.0)).masked_fill(~real, float("-inf"))
            weights = torch.exp(logm - torch.logcumsumexp(logm, dim=1))  # NaN before the first real token
            weights = torch.where(real, weights, torch.zeros_like(weights))  # padded positions: 0, never NaN
        else:  # μ, σ² of all real tokens; w = softmax along the sequence over the real tokens
            vk = v * real.to(x.dtype)
            count = real.to(x.dtype).sum(1, keepdim=True)  # (B, 1, 1, 1)
            mean = vk.sum(1, keepdim=True) / count.clamp(min=1.0)
            var = ((v - mean).square() * real.to(x.dtype)).sum(1, keepdim=True) / (count - 1).clamp(min=1.0)
            weights = masked_softmax(self.log_density(v, mean, var), real, dim=1)
        return self.out_proj((v * weights).reshape(b, length, self.dim))

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """Example by example over its real tokens: noncausal, torch.mean / torch.var and a softmax over the
        sequence; causal, the recurrence on running Σx, Σx², count and log Σ m (the state of `state_size`)."""
        self.check_inputs(x, context)
        b, length, _ = x.shape
        v = self.v_proj(x).view(b, length, self.num_heads, self.head_dim)
        keep = keep_mask(key_padding_mask, b, length, x.device)
        out = torch.zeros_like(v)
        for bi in range(b):
            real = keep[bi].nonzero().flatten().tolist()
            if not self.causal:
                if not real:
                    continue
                vr = v[bi, real]  # (n, H, Dh)
                mean = vr.mean(0, keepdim=True)
                var = vr.var(0, keepdim=True) if len(real) > 1 else torch.zeros_like(mean)  # unbiased; one token: 0
                out[bi, real] = vr * torch.softmax(self.log_density(vr[None], mean[None], var[None])[0], dim=0)
                continue
            s1, s2 = torch.zeros_like(v[0, 0]), torch.zeros_like(v[0, 0])  # (H, Dh)
            log_z, count = torch.full_like(v[0, 0], float("-inf")), 0
            for i in real:
                vt = v[bi, i]
                count, s1, s2 = count + 1, s1 + vt, s2 + vt.square()
                mean = s1 / count
                var = ((s2 - count * mean.square()) / max(count - 1, 1)).clamp(min=0.0)
                logm = self.log_density(vt[None, None], mean[None, None], var[None, None])[0, 0]
                log_z = torch.logaddexp(log_z, logm)
                out[bi, i] = vt * torch.exp(logm - log_z)
        return self.out_proj(out.reshape(b, length, self.dim))

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        return 2 * batch * len_q * self.dim * self.dim * 2  # value and output projections

    def state_size(self, seq_len: int) -> int:
        return 3 * self.dim + 1

    # -- decode: Σv, Σv², log Σ m (B, H, Dh) and the count (B, 1, 1) -------------------------------
    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        v = self.v_proj(x).view(b, length, self.num_heads, self.head_dim)  # (B, L, H, Dh), as `forward`
        count = torch.arange(1, length + 1, dtype=x.dtype, device=x.device)[None, :, None, None]  # tokens <= i
        mean, mean_square = causal_prefix_mean(v, None, dim=1), causal_prefix_mean(v.square(), None, dim=1)
        var = count * (mean_square - mean.square()) / (count - 1).clamp(min=1.0)
        logm = self.log_density(v, mean, var.clamp(min=0.0))  # (B, L, H, Dh)
        log_z = torch.logcumsumexp(logm, dim=1)
        out = self.out_proj((v * torch.exp(logm - log_z)).reshape(b, length, self.dim))
        state = DecodeState(length, s1=v.sum(1), s2=v.square().sum(1), log_z=log_z[:, -1],
                            count=x.new_full((b, 1, 1), float(length)))
        return out, state

    def step(self, x_t, state):
        c = state
        v = self.v_proj(x_t[:, 0]).view(-1, self.num_heads, self.head_dim)  # (B, H, Dh)
        c["count"], c["s1"], c["s2"] = c["count"] + 1, c["s1"] + v, c["s2"] + v.square()
        mean = c["s1"] / c["count"]
        var = ((c["s2"] - c["count"] * mean.square()) / (c["count"] - 1).clamp(min=1.0)).clamp(min=0.0)
        logm = self.log_density(v[:, None], mean[:, None], var[:, None])[:, 0]  # (B, H, Dh)
        c["log_z"] = torch.logaddexp(c["log_z"], logm)
        c.position += 1
        return self.out_proj((v * torch.exp(logm - c["log_z"])).reshape(x_t.shape)), c
