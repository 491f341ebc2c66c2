"""Linformer (Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020).

Keys and values are projected along the *length* axis to k = `proj_len` rows by learned
E, F ∈ ℝ^{max_len×k} (shared by the heads, as in the paper's headwise sharing):

    K̄ = Eᵀ K,  V̄ = Fᵀ V              (B, H, k, Dh)   (E, F cut to the first Lk rows)
    O = softmax(Q K̄ᵀ / √Dh) V̄        (B, H, Lq, Dh)   scores (B, H, Lq, k): no L×L tensor

The length is bounded by `max_len` (a sequence of Lk <= max_len uses E[:Lk]). Padded keys and
values are zeroed before the projection, so they add nothing. Each projected row mixes every
position, so causal self is impossible; cross works with keys from the source (Lk <= max_len),
and causal cross holds because queries never interact.
Defaults: k = 256 (paper); max_len: the task's longest key length in a run (cab.task.AttentionFactory)
and the point's length in `cab bench`, as the paper sizes E and F to n; 16384 if built directly.
FLOPs per head: 2·Lk·k·Dh twice (projections), 2·Lq·k·Dh twice (QK̄ᵀ and P·V̄).
"""

from __future__ import annotations

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import zero_padded_keys


@register_attention(
    "linformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "each projected key/value row mixes every position, future ones included"},
)
class LinformerAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, proj_len: int = 256, max_len: int = 16384):
        super().__init__(dim, num_heads, pattern)
        self.proj_len = proj_len
        self.max_len = max_len
        self.e_proj = nn.Parameter(torch.randn(max_len, proj_len) / proj_len**0.5)  # E: (max_len, k)
        self.f_proj = nn.Parameter(torch.randn(max_len, proj_len) / proj_len**0.5)  # F: (max_len, k)

    def attend(self, q, k, v, key_padding_mask):
        len_k = k.shape[-2]
        if len_k > self.max_len:
            raise ValueError(f"linformer: key length {len_k} exceeds max_len {self.max_len}")
        k = zero_padded_keys(k, key_padding_mask)
        v = zero_padded_keys(v, key_padding_mask)
        e = self.e_proj[:len_k].to(k.dtype)  # (Lk, k)
        f = self.f_proj[:len_k].to(v.dtype)
        k_bar = torch.einsum("bhld,lk->bhkd", k, e)  # (B, H, k, Dh)
        v_bar = torch.einsum("bhld,lk->bhkd", v, f)
        scores = (q * self.head_dim**-0.5) @ k_bar.transpose(-1, -2)  # (B, H, Lq, k)
        return torch.softmax(scores, dim=-1) @ v_bar  # (B, H, Lq, Dh)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        k, dim = self.proj_len, self.dim
        return batch * (2 * 2 * len_k * k * dim + 2 * 2 * len_q * k * dim)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", proj_len={self.proj_len}, max_len={self.max_len}"
