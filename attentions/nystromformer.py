"""Nyströmformer (Xiong et al., "Nyströmformer: A Nyström-Based Algorithm for Approximating
Self-Attention", AAAI 2021).

softmax(QKᵀ/√Dh) is approximated from c landmark queries and keys (segment means):

    Q̃ = segment means of Q, K̃ = segment means of K            (B, H, c, Dh)
    F̃ = softmax(Q K̃ᵀ/√Dh)                                    (B, H, L, c)
    Ã = softmax(Q̃ K̃ᵀ/√Dh)                                    (B, H, c, c)
    B̃ = softmax(Q̃ Kᵀ/√Dh)  (padded keys masked)               (B, H, c, L)
    Z ≈ Ã⁺ by `pinv_iterations` Newton–Schulz steps:
        Z₀ = Ãᵀ / (‖Ã‖₁‖Ã‖∞),  Z ← ¼ Z (13I − ÃZ(15I − ÃZ(7I − ÃZ)))
    O = (F̃ Z)(B̃ V)                                           (B, H, L, Dh)
    (+ an optional depthwise convolution of V along the length, `conv_kernel_size`)

Segments: the binning rule of `cab.ops.pooling` over the real (unpadded) tokens, so padding never
moves a landmark; with c >= n each landmark is one token and O = softmax(QKᵀ)V up to the
pseudo-inverse's convergence. No L×L tensor. Self only: landmarks pool queries and keys over the
whole sequence, so every output depends on the future (causal self), and cross would need landmarks
from two sequences (not in the paper or CAB). CAB's defaults: 16 landmarks, no convolution; 6 iterations.
Reference (`reference_attend`): the L×L matrix F̃ Z B̃ written out, landmarks pooled by loops.
FLOPs per head: landmarks 2·2·c·L·Dh; F̃ 2·L·c·Dh; Ã 2·c²·Dh; B̃ 2·c·L·Dh; pinv 8·c³ per
iteration; F̃Z 2·L·c²; B̃V 2·c·L·Dh; (F̃Z)(B̃V) 2·L·c·Dh; conv 2·L·Dh·k.
"""

from __future__ import annotations

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import allowed_mask, keep_mask, masked_softmax, segment_means_reference, segment_weights, zero_padding

_WHY = {
    Pattern.CAUSAL_SELF: "segment-mean landmarks pool the whole sequence, future positions included",
    Pattern.NONCAUSAL_CROSS: "landmarks are segment means of one sequence's queries and keys (self only, as in the paper)",
    Pattern.CAUSAL_CROSS: "query landmarks pool all queries, so an output depends on later queries",
}


def iterative_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Newton–Schulz (third order) pseudo-inverse of a (..., c, c), initialised per matrix."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    col = a.abs().sum(dim=-2).amax(dim=-1)[..., None, None]  # ‖A‖₁
    row = a.abs().sum(dim=-1).amax(dim=-1)[..., None, None]  # ‖A‖∞
    z = a.transpose(-1, -2) / (col * row)
    for _ in range(iterations):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


@register_attention(
    "nystromformer", patterns={Pattern.NONCAUSAL_SELF}, unsupported=_WHY,
    family="low-rank",
    paper={"title": "Nyströmformer: A Nyström-Based Algorithm for Approximating Self-Attention",
           "authors": "Xiong et al.", "venue": "AAAI", "year": 2021, "url": "https://arxiv.org/abs/2102.03902"},
)
class NystromAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_landmarks: int = 16, pinv_iterations: int = 6,
                 conv_kernel_size: int | None = None):
        super().__init__(dim, num_heads, pattern)
        self.num_landmarks = num_landmarks
        self.pinv_iterations = pinv_iterations
        self.conv_kernel_size = conv_kernel_size
        self.conv = None
        if conv_kernel_size:
            self.conv = nn.Conv2d(num_heads, num_heads, (conv_kernel_size, 1), padding=(conv_kernel_size // 2, 0),
                                  bias=False, groups=num_heads)

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape
        q, k = q * d**-0.25, k * d**-0.25  # the 1/√Dh of every score, split between the two sides
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        pool = segment_weights(keep, self.num_landmarks, q.dtype)[:, None]  # (B, 1, c, L)
        q_land, k_land = pool @ q, pool @ k  # (B, H, c, Dh)
        f = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)  # F̃ (B, H, L, c)
        a = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)  # Ã (B, H, c, c)
        allowed = allowed_mask(key_padding_mask, self.num_landmarks, length)  # (B, 1, 1, L) real keys, or None
        bt = masked_softmax(q_land @ k.transpose(-1, -2), allowed)  # B̃ (B, H, c, L)
        z = iterative_pinv(a, self.pinv_iterations)  # Z ≈ Ã⁺ (B, H, c, c)
        out = (f @ z) @ (bt @ v)  # (B, H, L, Dh), never L×L
        if self.conv is not None:
            out = out + self.conv(zero_padding(v, key_padding_mask))
        return out

    def reference_attend(self, q, k, v, key_padding_mask):
        """O = (F̃ Z B̃) V with the L×L approximate attention matrix formed; landmarks by the pooling loops."""
        b, h, length, d = q.shape
        keep = keep_mask(key_padding_mask, b, length, q.device)
        q_land, _ = segment_means_reference(q, keep, self.num_landmarks)  # (B, H, c, Dh)
        k_land, _ = segment_means_reference(k, keep, self.num_landmarks)
        scale = d**-0.5
        f = torch.softmax(q @ k_land.transpose(-1, -2) * scale, dim=-1)
        a = torch.softmax(q_land @ k_land.transpose(-1, -2) * scale, dim=-1)
        bt = masked_softmax(q_land @ k.transpose(-1, -2) * scale, keep[:, None, None, :])
        attention = f @ iterative_pinv(a, self.pinv_iterations) @ bt  # (B, H, L, L)
        out = attention @ v
        if self.conv is not None:  # depthwise along the length: Σ_t w_t v_{i+t-k//2}, zero outside and at padding
            vz = v * keep[:, None, :, None].to(v.dtype)
            half = self.conv_kernel_size // 2
            w = self.conv.weight[:, 0, :, 0]  # (H, k)
            for t in range(self.conv_kernel_size):
                shift = t - half
                lo, hi = max(0, -shift), min(length, length - shift)
                out[:, :, lo:hi] += w[:, t, None, None] * vz[:, :, lo + shift : hi + shift]
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        n, c, d = len_q, self.num_landmarks, self.head_dim
        per_head = (4 * c * n * d + 2 * n * c * d + 2 * c * c * d + 2 * c * n * d + 8 * c**3 * self.pinv_iterations
                    + 2 * n * c * c + 2 * c * n * d + 2 * n * c * d)
        if self.conv is not None:
            per_head += 2 * n * d * self.conv_kernel_size
        return batch * self.num_heads * per_head

    def extra_repr(self) -> str:
        return super().extra_repr() + f", num_landmarks={self.num_landmarks}"
