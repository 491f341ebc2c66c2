"""Latent bottleneck attention, from "Dynamic Perceiver for Efficient Visual Recognition" (Han,
Pu, Lai, Wang, Song, Huang, ICCV 2023), after "Perceiver: General Perception with Iterative
Attention" (Jaegle et al., ICML 2021).

K learned latent vectors read the keys and values by cross attention (the latents are the
queries); each query then reads the latents by a second cross attention:

    Z   = softmax(Λ Kᵀ/√Dh) V                        Λ: (H, K, Dh) learned latent queries
    out = softmax(Q (Z W_k)ᵀ/√Dh) (Z W_v)            latent keys/values projected from Z

Queries never interact, so causal cross holds; the latents summarise every key, so causal self
does not. Port: the image feature map read by the latent code becomes the sequence; Dynamic
Perceiver's feature-to-latent and latent-to-feature cross attentions are this layer's two hops;
its latent self-attention blocks and FFNs are left to the backbone. Default K = 128 latents.

Cost: O((Lq + Lk)·K·dim) attention + 2·K·dim² for the latent key/value projections. Both hops run
through F.scaled_dot_product_attention. Reference (`reference_attend`): the two hops as dense softmaxes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import keep_mask, masked_softmax, sdpa_mask, softmax_attention_flops

@register_attention(
    "perceiver",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "the latents read every position, so every output depends on later inputs"},
    family="low-rank",
    paper={"title": "Dynamic Perceiver for Efficient Visual Recognition",
           "authors": "Han et al.", "venue": "ICCV", "year": 2023, "url": "https://arxiv.org/abs/2306.11248"},
)
class PerceiverAttention(MultiHeadAttention):
    """Two-hop latent cross attention (Dynamic Perceiver / Perceiver)."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_latents: int = 128):
        super().__init__(dim, num_heads, pattern)
        self.num_latents = num_latents
        self.latents = nn.Parameter(torch.randn(num_heads, num_latents, self.head_dim) * 0.02)  # Λ: (H, K, Dh)
        self.latent_k = nn.Linear(dim, dim)
        self.latent_v = nn.Linear(dim, dim)

    def latent_kv(self, k, v, key_padding_mask):
        """Latents read the sequence. k, v: (B, H, Lk, Dh) -> latent keys, values: (B, H, K, Dh)."""
        b = k.shape[0]
        lat = self.latents.unsqueeze(0).expand(b, -1, -1, -1).to(k.dtype)  # (B, H, K, Dh)
        mask, _ = sdpa_mask(key_padding_mask, False, self.num_latents, k.shape[2])  # (B, 1, 1, Lk) or None
        z = F.scaled_dot_product_attention(lat, k, v, attn_mask=mask)  # (B, H, K, Dh)
        zm = self.merge_heads(z)  # (B, K, dim)
        return self.split_heads(self.latent_k(zm)), self.split_heads(self.latent_v(zm))

    def attend(self, q, k, v, key_padding_mask):
        lk, lv = self.latent_kv(k, v, key_padding_mask)  # (B, H, K, Dh)
        return F.scaled_dot_product_attention(q, lk, lv)  # (B, H, Lq, Dh): each query reads the latents

    def reference_attend(self, q, k, v, key_padding_mask):
        """Z = softmax(Λ Kᵀ/√Dh) V over the real keys; out = softmax(Q (Z W_k)ᵀ/√Dh) (Z W_v)."""
        b, _, len_k, d = k.shape
        keep = keep_mask(key_padding_mask, b, len_k, k.device)
        z = masked_softmax(self.latents.to(k.dtype) @ k.transpose(-1, -2) * d**-0.5, keep[:, None, None, :]) @ v
        zm = self.merge_heads(z)  # (B, K, dim)
        latent_k, latent_v = self.split_heads(self.latent_k(zm)), self.split_heads(self.latent_v(zm))
        return torch.softmax(q @ latent_k.transpose(-1, -2) * d**-0.5, dim=-1) @ latent_v

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        m, h, d = self.num_latents, self.num_heads, self.head_dim
        read_in = softmax_attention_flops(batch, h, m, len_k, d, d)  # ΛKᵀ and ·V over all heads
        latent_proj = batch * 2 * 2 * m * self.dim * self.dim  # W_k, W_v on the K latents
        read_out = softmax_attention_flops(batch, h, len_q, m, d, d)  # Q·(latent keys)ᵀ and ·(latent values)
        return read_in + latent_proj + read_out
