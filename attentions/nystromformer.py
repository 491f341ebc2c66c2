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

Segments split the real (unpadded) length n into c nearly equal runs, so appended padding moves
nothing; with c >= n each landmark is one position and O = softmax(QKᵀ)V up to the pseudo-inverse's
convergence. No L×L tensor. Self only: landmarks pool queries and keys over the whole sequence,
so every output depends on the future (causal self), and cross would need landmarks from two
sequences (not in the paper or CAB). CAB's defaults: 16 landmarks, no convolution; 6 iterations.
FLOPs per head: landmarks 2·2·c·L·Dh; F̃ 2·L·c·Dh; Ã 2·c²·Dh; B̃ 2·c·L·Dh; pinv 8·c³ per
iteration; F̃Z 2·L·c²; B̃V 2·c·L·Dh; (F̃Z)(B̃V) 2·L·c·Dh; conv 2·L·Dh·k.
"""

from __future__ import annotations

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention

from ._part1_common import masked_softmax, segment_weights

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


@register_attention("nystromformer", patterns={Pattern.NONCAUSAL_SELF}, unsupported=_WHY)
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
        c = self.num_landmarks
        scale = d**-0.25
        q, k = q * scale, k * scale
        seg = segment_weights(length, c, key_padding_mask, b, q.device, q.dtype)[:, None]  # (B, 1, c, L)
        q_land = seg @ q  # (B, H, c, Dh)
        k_land = seg @ k  # (B, H, c, Dh)
        f = torch.softmax(q @ k_land.transpose(-1, -2), dim=-1)  # (B, H, L, c)
        a = torch.softmax(q_land @ k_land.transpose(-1, -2), dim=-1)  # (B, H, c, c)
        allowed = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        bt = masked_softmax(q_land @ k.transpose(-1, -2), allowed)  # (B, H, c, L)
        z = iterative_pinv(a, self.pinv_iterations)  # (B, H, c, c)
        out = (f @ z) @ (bt @ v)  # (B, H, L, Dh)
        if self.conv is not None:
            vz = v if key_padding_mask is None else v.masked_fill(key_padding_mask[:, None, :, None], 0.0)
            out = out + self.conv(vz)
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
