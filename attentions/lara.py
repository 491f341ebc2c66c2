"""LARA: Linear Randomized Attention (Zheng, Wang & Kong, "Linear Complexity Randomized
Self-attention Mechanism", ICML 2022).

Softmax attention is an expectation over random features; LARA estimates it by self-normalised
importance sampling with C query-dependent proposals N(μ_c, I) (C = `num_proposals`):

    q̂ = q·Dh^(-1/4), k̂ = k·Dh^(-1/4);  ξ(x, ω) = exp(ωᵀx − ‖x‖²/2)
    μ_c = q̄_c + k̄_c  (segment means, c = 1..C)                 (B, H, C, Dh)
    ω_c = μ_c + ε_c, ε ~ N(0, I) in training; ω_c = μ_c in eval (deterministic)
    kv_c = Σ_m softmax_m(log ξ(k̂_m, ω_c)) v_m                   (B, H, C, Dh)
    log r_nc = μ_cᵀq̂_n + log ξ(q̂_n, ω_c) + logsumexp_m log ξ(k̂_m, ω_c) − log ξ(μ_c, ω_c)
    O_n = Σ_c softmax_c(log r_n)_c kv_c                          (B, H, L, Dh)

(μ_cᵀq̂_n is the stratum weight; the last term is the proposal density.) Cost O(L·C·Dh), no L×L
tensor. Segments split the real (unpadded) length, so appended padding changes nothing; padded
keys are excluded from the key sums. Noncausal self only: proposals pool all queries and keys.
CAB's default: 16 proposals (num_landmarks), 'seg-means'.
FLOPs per head: segment means 2·2·C·L·Dh; log ξ(q̂), log ξ(k̂), stratum, kv and output
2·C·L·Dh each (5 in all); the proposal density is elementwise.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention

from ._part1_common import masked_softmax, segment_weights

_WHY = {
    Pattern.CAUSAL_SELF: "proposals are segment means over all queries and keys, future positions included",
    Pattern.NONCAUSAL_CROSS: "proposals pair query and key segment means of one sequence (self only, as in the paper and CAB)",
    Pattern.CAUSAL_CROSS: "proposals pool all queries, so an output depends on later queries",
}


@register_attention("lara", patterns={Pattern.NONCAUSAL_SELF}, unsupported=_WHY)
class LaraAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_proposals: int = 16):
        super().__init__(dim, num_heads, pattern)
        self.num_proposals = num_proposals

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape
        q, k = q * d**-0.25, k * d**-0.25
        seg = segment_weights(length, self.num_proposals, key_padding_mask, b, q.device, q.dtype)[:, None]  # (B,1,C,L)
        mu = seg @ q + seg @ k  # (B, H, C, Dh)
        omega = mu + torch.randn_like(mu) if self.training else mu
        log_xi_q = q @ omega.transpose(-1, -2) - 0.5 * q.square().sum(-1, keepdim=True)  # (B, H, L, C)
        log_xi_k = k @ omega.transpose(-1, -2) - 0.5 * k.square().sum(-1, keepdim=True)  # (B, H, L, C)
        log_xi_mu = (mu * omega).sum(-1) - 0.5 * mu.square().sum(-1)  # (B, H, C)
        if key_padding_mask is not None:
            log_xi_k = log_xi_k.masked_fill(key_padding_mask[:, None, :, None], float("-inf"))
        kv = torch.softmax(log_xi_k, dim=-2).transpose(-1, -2) @ v  # (B, H, C, Dh)
        lse_k = torch.logsumexp(log_xi_k, dim=-2)  # (B, H, C)
        log_ratio = q @ mu.transpose(-1, -2) + log_xi_q + (lse_k - log_xi_mu)[..., None, :]  # (B, H, L, C)
        return masked_softmax(log_ratio, None) @ kv  # (B, H, L, Dh)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        c, d = self.num_proposals, self.head_dim
        return batch * self.num_heads * (2 * 2 * c * len_q * d + 5 * 2 * c * len_q * d)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_proposals={self.num_proposals}"
