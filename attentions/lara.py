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
tensor. Segments: the binning rule of `cab.ops.pooling` over the real (unpadded) tokens, so padding
changes nothing; padded keys are excluded from the key sums (a masked softmax with its log-sum-exp).
Noncausal self only: proposals pool all queries and keys. CAB's default: 16 proposals, 'seg-means'.
Reference (`reference_attend`): the formula above proposal by proposal over each example's real
tokens, landmarks pooled by loops (eval: ω = μ).
FLOPs per head: segment means 2·2·C·L·Dh; log ξ(q̂), log ξ(k̂), stratum, kv and output
2·C·L·Dh each (5 in all); the proposal density is elementwise.
"""

from __future__ import annotations

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import allowed_mask, keep_mask, masked_softmax_lse, segment_means_reference, segment_weights

_WHY = {
    Pattern.CAUSAL_SELF: "proposals are segment means over all queries and keys, future positions included",
    Pattern.NONCAUSAL_CROSS: "proposals pair query and key segment means of one sequence (self only, as in the paper and CAB)",
    Pattern.CAUSAL_CROSS: "proposals pool all queries, so an output depends on later queries",
}


def _log_xi(x: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """log ξ(x, ω) = ωᵀx − ‖x‖²/2 for every pair: x (..., L, Dh), ω (..., C, Dh) -> (..., C, L)."""
    return omega @ x.transpose(-1, -2) - 0.5 * x.square().sum(-1)[..., None, :]


@register_attention(
    "lara", patterns={Pattern.NONCAUSAL_SELF}, unsupported=_WHY,
    family="linear",
    paper={"title": "Linear Complexity Randomized Self-attention Mechanism",
           "authors": "Zheng et al.", "venue": "ICML", "year": 2022, "url": "https://arxiv.org/abs/2204.04667"},
)
class LaraAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_proposals: int = 16):
        super().__init__(dim, num_heads, pattern)
        self.num_proposals = num_proposals

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape
        q, k = q * d**-0.25, k * d**-0.25  # q̂, k̂
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        pool = segment_weights(keep, self.num_proposals, q.dtype)[:, None]  # (B, 1, C, L)
        mu = pool @ q + pool @ k  # (B, H, C, Dh)
        omega = mu + torch.randn_like(mu) if self.training else mu
        allowed = allowed_mask(key_padding_mask, self.num_proposals, length)  # (B, 1, 1, L) real keys, or None
        p_k, lse_k = masked_softmax_lse(_log_xi(k, omega), allowed)  # softmax over keys m (B, H, C, L), lse (B, H, C)
        kv = p_k @ v  # (B, H, C, Dh)
        log_xi_q = _log_xi(q, omega).transpose(-1, -2)  # (B, H, L, C)
        log_xi_mu = (mu * omega).sum(-1) - 0.5 * mu.square().sum(-1)  # (B, H, C)
        log_ratio = q @ mu.transpose(-1, -2) + log_xi_q + (lse_k - log_xi_mu)[..., None, :]  # (B, H, L, C)
        return torch.softmax(log_ratio, dim=-1) @ kv  # (B, H, L, Dh)

    def reference_attend(self, q, k, v, key_padding_mask):
        """O_n = Σ_c softmax_c(μ_c·q̂_n + log ξ(q̂_n, μ_c) + log Σ_m ξ(k̂_m, μ_c) − log ξ(μ_c, μ_c)) kv_c, proposal
        by proposal, the key sums over each example's real keys (eval form: ω = μ)."""
        b, h, length, d = q.shape
        qs, ks = q * d**-0.25, k * d**-0.25
        keep = keep_mask(key_padding_mask, b, length, q.device)
        mu = sum(segment_means_reference(t, keep, self.num_proposals)[0] for t in (qs, ks))  # q̄_c + k̄_c

        def log_xi(x, w):  # x (..., L, Dh), w (..., Dh) -> (..., L)
            return (x * w[..., None, :]).sum(-1) - 0.5 * x.square().sum(-1)

        out = torch.zeros_like(q)
        for bi in range(b):
            real_k, real_v = ks[bi][:, keep[bi]], v[bi][:, keep[bi]]  # (H, n, Dh)
            weights, values = [], []
            for c in range(self.num_proposals):
                w = mu[bi, :, c]  # (H, Dh)
                lk = log_xi(real_k, w)  # (H, n)
                values.append(torch.softmax(lk, -1)[:, None, :] @ real_v)  # (H, 1, Dh)
                stratum = (qs[bi] * w[:, None, :]).sum(-1)  # (H, L)
                proposal = torch.logsumexp(lk, -1) - log_xi(w[:, None, :], w)[:, 0]  # (H,)
                weights.append(stratum + log_xi(qs[bi], w) + proposal[:, None])
            out[bi] = torch.softmax(torch.stack(weights, -1), -1) @ torch.cat(values, 1)  # (H, L, C) @ (H, C, Dh)
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        c, d = self.num_proposals, self.head_dim
        return batch * self.num_heads * (2 * 2 * c * len_q * d + 5 * 2 * c * len_q * d)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_proposals={self.num_proposals}"
