"""Performer / FAVOR+ (Choromanski et al., "Rethinking Attention with Performers", ICLR 2021).

Positive orthogonal random features approximate the softmax kernel exp(qᵀk/√Dh):

    q̂ = q·Dh^(-1/4), k̂ = k·Dh^(-1/4)                         (B, H, L, Dh)
    ω: (H, m, Dh) Gaussian orthogonal rows, drawn once at init (a buffer; eval is deterministic)
    φ(x) = exp(ωx̂ - ‖x̂‖²/2 - c) / √m                          (B, H, L, m), c a stabiliser
    noncausal:  O = φ(Q) [φ(K)ᵀ V] / φ(Q) [φ(K)ᵀ 1]           (m×Dh per head, O(L·m·Dh))
    causal:     O_i = Σ_{j<=i} φ(q_i)·φ(k_j) v_j / Σ_{j<=i} φ(q_i)·φ(k_j)

Stabilisers: any constant shared by the keys a query reads cancels between numerator and
denominator, so the output is the unstabilised FAVOR+ estimate. Queries use their own max over
features. Keys, noncausal: the max over all (real) keys, as in the reference code. Keys, causal
self: the reference's global key max would look ahead (CAB disables causal Performer for that
leak), so here c_j = running max over keys <= j (a cummax, never ahead); key j is stored as
exp(ωk̂_j - ‖k̂_j‖²/2 - c_j) and the difference to a query's c_i becomes a decay exp(c_j - c_i) <= 1
inside the chunked causal kernel (GLA-style scalar gate), exact and overflow-free, no eps term.

CAB's default is 16 features (approx_attn_dim). Random features are fixed after init; they are
not redrawn (set `redraw=True` to draw new ones at every training forward).
FLOPs per head: features 2·(Lq+Lk)·m·Dh; noncausal 2·Lk·m·(Dh+1) + 2·Lq·m·(Dh+1); causal the
chunked kernel's `causal_linear_flops(L, m, Dh+1, C)`. The exp/norm work is elementwise, O(L·m).
State of the recurrent form: S (m×Dh) and z (m) per head.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.kernels import causal_linear_flops

from ._part1_common import gated_causal_linear_attention, orthogonal_gaussian


@register_attention("performer", patterns=set(Pattern))
class PerformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_features: int = 16, chunk_size: int = 64,
                 redraw: bool = False):
        super().__init__(dim, num_heads, pattern)
        self.num_features = num_features
        self.chunk_size = chunk_size
        self.redraw = redraw
        self.register_buffer("omega", self._draw())  # (H, m, Dh)

    def _draw(self) -> torch.Tensor:
        return torch.stack([orthogonal_gaussian(self.num_features, self.head_dim) for _ in range(self.num_heads)])

    def _log_features(self, x: torch.Tensor) -> torch.Tensor:
        """ωx̂ - ‖x̂‖²/2 - ½·log m, (B, H, L, m); x: (B, H, L, Dh)."""
        xs = x * self.head_dim**-0.25
        proj = xs @ self.omega.to(x.dtype).transpose(-1, -2)  # (B, H, L, m)
        return proj - 0.5 * xs.square().sum(-1, keepdim=True) - 0.5 * torch.log(torch.tensor(float(self.num_features)))

    def attend(self, q, k, v, key_padding_mask):
        if self.redraw and self.training:
            self.omega = self._draw().to(self.omega)
        lq = self._log_features(q)  # (B, H, Lq, m)
        lk = self._log_features(k)  # (B, H, Lk, m)
        phi_q = torch.exp(lq - lq.amax(-1, keepdim=True).detach())  # per-query constant: cancels
        pad = None if key_padding_mask is None else key_padding_mask[:, None, :, None]  # (B, 1, Lk, 1)
        low = torch.finfo(lk.dtype).min / 4
        ones = torch.ones_like(v[..., :1])
        v1 = torch.cat([v, ones], dim=-1)  # (B, H, Lk, Dh+1): last column is the normaliser
        if self.causal:
            row_max = lk.amax(-1, keepdim=True)  # (B, H, L, 1)
            if pad is not None:
                row_max = row_max.masked_fill(pad, low)
            c = torch.cummax(row_max.detach(), dim=2).values  # running max: never looks ahead
            phi_k = torch.exp((lk - c).clamp(max=0.0))  # <= 1
            if pad is not None:
                phi_k = phi_k.masked_fill(pad, 0.0)
            num_den = gated_causal_linear_attention(phi_q, phi_k, v1, -c.squeeze(-1), self.chunk_size)
        else:
            masked = lk if pad is None else lk.masked_fill(pad, low)
            c = masked.amax(dim=(-2, -1), keepdim=True).detach()  # one constant per (batch, head)
            phi_k = torch.exp(masked - c)
            if pad is not None:
                phi_k = phi_k.masked_fill(pad, 0.0)
            kv = phi_k.transpose(-1, -2) @ v1  # (B, H, m, Dh+1)
            num_den = phi_q @ kv  # (B, H, Lq, Dh+1)
        den = num_den[..., -1:].clamp_min(torch.finfo(v.dtype).tiny)
        return num_den[..., :-1] / den

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, h, m = self.head_dim, self.num_heads, self.num_features
        features = 2 * (len_q + len_k) * m * d
        if self.causal:
            return batch * h * features + causal_linear_flops(batch, h, len_q, m, d + 1, self.chunk_size)
        return batch * h * (features + 2 * len_k * m * (d + 1) + 2 * len_q * m * (d + 1))

    def state_size(self, seq_len: int) -> int:
        return self.num_heads * (self.num_features * self.head_dim + self.num_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_features={self.num_features}"
