"""Linformer (Wang et al., "Linformer: Self-Attention with Linear Complexity", 2020).

Keys and values are projected along the *length* axis to k = `proj_len` rows by learned
E, F ∈ ℝ^{max_len×k} (shared by the heads, as in the paper's headwise sharing):

    K̄ = Eᵀ K,  V̄ = Fᵀ V              (B, H, k, Dh)   (E, F cut to the first Lk rows)
    O = softmax(Q K̄ᵀ / √Dh) V̄        (B, H, Lq, Dh)   scores (B, H, Lq, k): no L×L tensor

The length is bounded by `max_len` (a sequence of Lk <= max_len uses E[:Lk]). Padded keys and
values are zeroed before the projection (`cab.ops.zero_padding`), so they add nothing; the attention
over the k projected rows is `cab.ops.softmax_attention` (no mask: every projected row is real).
No reference form: the computation above is already the plain one (nothing is chunked or fused).
Each projected row mixes every position, so causal self is impossible; cross works with keys from
the source (Lk <= max_len), and causal cross holds because queries never interact.
Defaults: k = 256 (paper); max_len: the task's longest key length in a run (cab.run.factory.AttentionFactory)
and the point's length in `cab bench`, as the paper sizes E and F to n; 16384 if built directly.
FLOPs per head: 2·Lk·k·Dh twice (projections), 2·Lq·k·Dh twice (QK̄ᵀ and P·V̄).
"""

from __future__ import annotations

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import softmax_attention, softmax_attention_flops, zero_padding


@register_attention(
    "linformer",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "each projected key/value row mixes every position, future ones included"},
    family="low-rank",
    paper={"title": "Linformer: Self-Attention with Linear Complexity",
           "authors": "Wang et al.", "venue": "arXiv", "year": 2020, "url": "https://arxiv.org/abs/2006.04768"},
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
        k = zero_padding(k, key_padding_mask)  # padded keys and values add nothing to the projections
        v = zero_padding(v, key_padding_mask)
        e = self.e_proj[:len_k].to(k.dtype)  # (Lk, k)
        f = self.f_proj[:len_k].to(v.dtype)
        k_bar = torch.einsum("bhld,lk->bhkd", k, e)  # (B, H, k, Dh)
        v_bar = torch.einsum("bhld,lk->bhkd", v, f)
        return softmax_attention(q, k_bar, v_bar)  # softmax(Q K̄ᵀ/√Dh) V̄: (B, H, Lq, Dh), scores (B, H, Lq, k)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        k, d, h = self.proj_len, self.head_dim, self.num_heads
        projections = batch * h * 2 * 2 * len_k * k * d  # Eᵀ K and Fᵀ V
        return projections + softmax_attention_flops(batch, h, len_q, k, d, d)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", proj_len={self.proj_len}, max_len={self.max_len}"
