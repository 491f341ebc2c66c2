"""Aggregated attention, from "TransNeXt: Robust Foveal Visual Perception for Vision Transformers"
(Dai Shi, CVPR 2024).

Each query attends, under one softmax, to (a) the fine tokens of a sliding window around it
("pixel-focused" attention) and (b) a fixed number P of coarse tokens pooled from the whole map:

    q̂ = (norm(q) + QE) · softplus(τ) · log(W + P)          learnable query embedding QE, temperature τ
    [a_loc, a_pool] = softmax([q̂·norm(k_w) + B_rel,  q̂·norm(k̄_p)])
    out = (a_loc + norm(q)·T + b) · V_w  +  a_pool · V̄_p    learnable tokens T (Dh × W) and bias b

(norm = L2 normalisation; the learnable tokens' affinities q·T are added to the window weights
after the softmax, as in TransNeXt.)

Port: the 3×3 window becomes a window of W = 9 tokens (centred; causal: the 9 up to and including
the query); the 7×7 pooled map becomes P = 49 average-pooled segments; the pooled keys/values are
pooled from the projected k and v (pooling commutes with the projections; TransNeXt's norm + GELU
between pooling and projection is dropped, and so is the CPB position bias of the pooled tokens;
the window keeps a learned relative position bias). Causal: each query pools its own visible
prefix x[:i+1] into P segments (adaptive pooling of the prefix, from prefix sums), so coarse tokens
only summarise positions at or before the query.

Cost per head: 6·L·W·Dh (window scores, learnable tokens, window values) + 4·L·P·Dh (pooled).
Memory: windows and per-query pooled tokens are built one chunk of queries at a time, O(c·(W+P)·Dh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention

from ._part3_common import keep_mask, masked_softmax, segment_mean, sliding_windows, window_valid

_NO_CROSS = "the sliding window needs aligned query and key positions, which a separate source does not have"


@register_attention(
    "aggregated",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class AggregatedAttention(MultiHeadAttention):
    """TransNeXt aggregated attention (Shi 2024): sliding window + pooled tokens, one softmax."""

    def __init__(
        self, dim: int, num_heads: int, pattern: Pattern, window_size: int = 9, pool_size: int = 49,
        qk_norm: bool = True, chunk_size: int = 256,
    ):
        super().__init__(dim, num_heads, pattern)
        if window_size < 1 or pool_size < 0:
            raise ValueError("window_size must be >= 1 and pool_size >= 0")
        self.window_size, self.pool_size, self.qk_norm, self.chunk_size = window_size, pool_size, qk_norm, chunk_size
        h, d, w = num_heads, self.head_dim, window_size
        self.query_embedding = nn.Parameter(torch.randn(h, 1, d) * 0.02)  # QE
        self.temperature = nn.Parameter(torch.full((h, 1, 1), math.log(math.exp(1 / 0.24) - 1)))  # softplus -> 1/0.24
        self.learnable_tokens = nn.Parameter(torch.randn(h, d, w) * 0.02)  # T
        self.learnable_bias = nn.Parameter(torch.zeros(h, 1, w))  # b
        self.rel_pos_bias = nn.Parameter(torch.randn(h, 1, w) * 0.0004)  # B_rel, one per window offset

    def _reach(self) -> tuple[int, int]:
        """(window slots before the query, after it)."""
        w = self.window_size
        if self.causal:
            return w - 1, 0
        return (w - 1) // 2, w - 1 - (w - 1) // 2

    def _prefix_pool(self, prefix_k, prefix_v, prefix_n, start, stop):
        """Per query i in [start, stop): its prefix x[:i+1] pooled into P segments.
        prefix_k/v: (B, H, L+1, Dh) exclusive prefix sums; prefix_n: (B, L+1) real-token counts.
        -> keys, values (B, H, c, P, Dh), valid (B, c, P)."""
        p = self.pool_size
        n = torch.arange(start + 1, stop + 1, device=prefix_k.device)  # visible positions per query
        bounds = torch.div(n[:, None] * torch.arange(p + 1, device=n.device), p, rounding_mode="floor")  # (c, P+1)
        flat = bounds.reshape(-1)
        b, h, _, d = prefix_k.shape
        c = stop - start

        def seg_sums(t):  # (B, H, L+1, Dh) -> (B, H, c, P, Dh)
            g = t.index_select(2, flat).view(b, h, c, p + 1, d)
            return g[:, :, :, 1:] - g[:, :, :, :-1]

        cnt = prefix_n.index_select(1, flat).view(b, c, p + 1)
        cnt = cnt[:, :, 1:] - cnt[:, :, :-1]  # (B, c, P)
        denom = cnt.clamp(min=1).to(prefix_k.dtype)[:, None, :, :, None]
        return seg_sums(prefix_k) / denom, seg_sums(prefix_v) / denom, cnt > 0

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape  # (B, H, L, Dh)
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        left, right = self._reach()
        p = self.pool_size
        if self.qk_norm:
            qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            qs = (qn + self.query_embedding) * F.softplus(self.temperature) * math.log(self.window_size + p)
        else:
            qn, kn = q, k
            qs = (q + self.query_embedding) * d**-0.5
        if p and not self.causal:
            kp, pvalid = segment_mean(k, keep, p)  # (B, H, P, Dh), (B, P)
            vp, _ = segment_mean(v, keep, p)
            if self.qk_norm:
                kp = F.normalize(kp, dim=-1)
        if p and self.causal:
            w8 = keep.to(k.dtype)
            prefix_k = F.pad(torch.cumsum(k * w8[:, None, :, None], dim=2), (0, 0, 1, 0))  # (B, H, L+1, Dh)
            prefix_v = F.pad(torch.cumsum(v * w8[:, None, :, None], dim=2), (0, 0, 1, 0))
            prefix_n = F.pad(torch.cumsum(keep.to(torch.long), dim=1), (1, 0))  # (B, L+1)

        outs = []
        for s in range(0, length, self.chunk_size):
            e = min(length, s + self.chunk_size)
            kw = sliding_windows(kn, left, right, s, e)  # (B, H, c, W, Dh)
            vw = sliding_windows(v, left, right, s, e)  # (B, H, c, W, Dh)
            wvalid = window_valid(keep, left, right, s, e)[:, None]  # (B, 1, c, W)
            qs_c, qn_c = qs[:, :, s:e], qn[:, :, s:e]  # (B, H, c, Dh)
            s_loc = (qs_c.unsqueeze(-2) @ kw.transpose(-1, -2)).squeeze(-2) + self.rel_pos_bias  # (B, H, c, W)
            if p:
                if self.causal:
                    kpc, vpc, pv = self._prefix_pool(prefix_k, prefix_v, prefix_n, s, e)  # (B, H, c, P, Dh)
                    if self.qk_norm:
                        kpc = F.normalize(kpc, dim=-1)
                    s_pool = (qs_c.unsqueeze(-2) @ kpc.transpose(-1, -2)).squeeze(-2)  # (B, H, c, P)
                    pallow = pv[:, None]  # (B, 1, c, P)
                else:
                    s_pool = qs_c @ kp.transpose(-1, -2)  # (B, H, c, P)
                    pallow = pvalid[:, None, None, :].expand(-1, 1, e - s, -1)
                allowed = torch.cat([wvalid, pallow], dim=-1)
                attn = masked_softmax(torch.cat([s_loc, s_pool], dim=-1), allowed)
                a_loc, a_pool = attn[..., : self.window_size], attn[..., self.window_size :]
            else:
                a_loc = masked_softmax(s_loc, wvalid)
            a_loc = a_loc + (qn_c @ self.learnable_tokens + self.learnable_bias) * wvalid  # (B, H, c, W)
            out = (a_loc.unsqueeze(-2) @ vw).squeeze(-2)  # (B, H, c, Dh)
            if p:
                if self.causal:
                    out = out + (a_pool.unsqueeze(-2) @ vpc).squeeze(-2)
                else:
                    out = out + a_pool @ vp
            outs.append(out)
        return torch.cat(outs, dim=2)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # per query and head: window scores 2·W·Dh, learnable tokens q·T 2·Dh·W, window values 2·W·Dh;
        # pooled scores and values 4·P·Dh. Pooling (sums / prefix sums) and softmax are not matmuls.
        return batch * len_q * self.dim * (6 * self.window_size + 4 * self.pool_size)
