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
the window keeps a learned relative position bias). Pooling is the binning rule of `cab.ops.pooling`
over the real tokens (fewer real tokens than P: tokens repeat, every pooled token is defined). Causal:
each query pools the real tokens of its own prefix x[:i+1] into P segments (`causal_segment_means_of`,
from prefix sums computed once), so coarse tokens only summarise positions at or before the query.

Cost per head: 6·L·W·Dh (window scores, learnable tokens, window values) + 4·L·P·Dh (pooled).
Memory: windows and per-query pooled tokens are built one chunk of queries at a time, O(c·(W+P)·Dh).
Reference (`reference_attend`): query by query, window slots and pooled tokens (by loops) under one softmax.
Throughput (benchmarks/results/kernel_throughput.md): causal runs below 40% of the matmul rate, because
each query gathers its own prefix's pooled tokens (a per-query gather of P bounds), not a shared product.
Decode (causal): the running sums of k and v after every position (the prefix sums the pooling reads: a
query's P segments move with its prefix, so any past position can be a bound) and the window's last W − 1
normalised keys and values. A token reads P + 1 sums per segment set and its window: O((P + W)·dim) per
token, the state O(L·dim). state_size = 2·dim·n + 2·dim·min(W − 1, n) (pool_size 0: the window only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    TokenCache,
    causal_segment_means_of,
    causal_segment_means_reference,
    keep_mask,
    masked_softmax,
    rank_prefix,
    segment_bounds,
    segment_means,
    segment_means_reference,
    unfold_windows,
    window_valid,
)

_NO_CROSS = "the sliding window needs aligned query and key positions, which a separate source does not have"


@register_attention(
    "aggregated",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="sparse",
    paper={"title": "TransNeXt: Robust Foveal Visual Perception for Vision Transformers",
           "authors": "Shi", "venue": "CVPR", "year": 2024, "url": "https://arxiv.org/abs/2311.17132"},
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

    def _queries_and_keys(self, q, k):
        """(scaled queries with the query embedding, normalised queries, normalised keys): cosine scores
        with a learnt temperature × log(window + pool) when qk_norm, else scaled dot products."""
        if self.qk_norm:
            qn, kn = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = F.softplus(self.temperature) * math.log(self.window_size + self.pool_size)
            return (qn + self.query_embedding) * scale, qn, kn
        return (q + self.query_embedding) * q.shape[-1] ** -0.5, q, k

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape  # (B, H, L, Dh)
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        left, right = self._reach()
        p = self.pool_size
        qs, qn, kn = self._queries_and_keys(q, k)
        if p and not self.causal:
            kp, pvalid = segment_means(k, keep, p)  # pooled keys (B, H, P, Dh), valid (B, P)
            vp, _ = segment_means(v, keep, p)
            if self.qk_norm:
                kp = F.normalize(kp, dim=-1)
        if p and self.causal:
            prefix_k, prefix_v = rank_prefix(k, keep), rank_prefix(v, keep)  # once; each chunk reads them

        outs = []
        for s in range(0, length, self.chunk_size):
            e = min(length, s + self.chunk_size)
            kw = unfold_windows(kn, left, right, s, e)  # (B, H, c, W, Dh)
            vw = unfold_windows(v, left, right, s, e)  # (B, H, c, W, Dh)
            wvalid = window_valid(keep, left, right, s, e)[:, None]  # (B, 1, c, W)
            qs_c, qn_c = qs[:, :, s:e], qn[:, :, s:e]  # (B, H, c, Dh)
            s_loc = (qs_c.unsqueeze(-2) @ kw.transpose(-1, -2)).squeeze(-2) + self.rel_pos_bias  # (B, H, c, W)
            if p:
                if self.causal:
                    kpc, pv = causal_segment_means_of(prefix_k, p, s, e)  # (B, H, c, P, Dh), (B, c, P)
                    vpc, _ = causal_segment_means_of(prefix_v, p, s, e)
                    if self.qk_norm:
                        kpc = F.normalize(kpc, dim=-1)
                    s_pool = (qs_c.unsqueeze(-2) @ kpc.transpose(-1, -2)).squeeze(-2)  # (B, H, c, P)
                    pallow = pv[:, None]  # (B, 1, c, P)
                else:
                    s_pool = qs_c @ kp.transpose(-1, -2)  # (B, H, c, P)
                    pallow = pvalid[:, None, None, :].expand(-1, 1, e - s, -1)
                allowed = torch.cat([wvalid, pallow], dim=-1)
                attn = masked_softmax(torch.cat([s_loc, s_pool], dim=-1), allowed)  # one softmax over both
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

    def reference_attend(self, q, k, v, key_padding_mask):
        """One query at a time: its window slots inside the sequence and its pooled tokens (all real tokens, or
        its prefix's, pooled by the `segment_means_reference` loops), scored under one masked softmax."""
        b, h, length, d = q.shape
        keep = keep_mask(key_padding_mask, b, length, q.device)
        left, _ = self._reach()
        p = self.pool_size
        qs, qn, kn = self._queries_and_keys(q, k)
        if p and self.causal:  # (B, H, L, P, Dh): query i's prefix pooled; valid (B, L, P)
            kp_i, valid_i = causal_segment_means_reference(k, keep, p)
            vp_i, _ = causal_segment_means_reference(v, keep, p)
        elif p:
            (kp, valid), (vp, _) = segment_means_reference(k, keep, p), segment_means_reference(v, keep, p)
        extra = qn @ self.learnable_tokens + self.learnable_bias  # q·T + b: (B, H, L, W)
        out = torch.zeros_like(q)
        for i in range(length):
            slots = [w for w in range(self.window_size) if 0 <= i - left + w < length]
            keys = [i - left + w for w in slots]
            real = keep[:, keys][:, None, :]  # (B, 1, n)
            scores = (qs[:, :, i, None, :] * kn[:, :, keys]).sum(-1) + self.rel_pos_bias[:, 0, slots]  # (B, H, n)
            allowed = real
            if p:
                kp_q, vp_q, valid_q = (kp_i[:, :, i], vp_i[:, :, i], valid_i[:, i]) if self.causal else (kp, vp, valid)
                kp_q = F.normalize(kp_q, dim=-1) if self.qk_norm else kp_q
                scores = torch.cat([scores, (qs[:, :, i, None, :] * kp_q).sum(-1)], dim=-1)  # (B, H, n + P)
                allowed = torch.cat([real, valid_q[:, None, :]], dim=-1)
            attn = masked_softmax(scores, allowed)
            a_loc = attn[..., : len(slots)] + extra[:, :, i, slots] * real
            out[:, :, i] = (a_loc[..., None] * v[:, :, keys]).sum(-2)
            if p:
                out[:, :, i] += (attn[..., len(slots) :, None] * vp_q).sum(-2)
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # per query and head: window scores 2·W·Dh, learnable tokens q·T 2·Dh·W, window values 2·W·Dh;
        # pooled scores and values 4·P·Dh. Pooling (sums / prefix sums) and softmax are not matmuls.
        return batch * len_q * self.dim * (6 * self.window_size + 4 * self.pool_size)

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        window = 2 * self.dim * min(self.window_size - 1, seq_len)
        return window + (2 * self.dim * seq_len if self.pool_size else 0)  # + the running sums of k and v

    # -- decode: running sums of k and v at every position, the window's last W - 1 keys and values ----
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out = self.out_proj(self.merge_heads(self.attend(q, k, v, None)))
        _, _, kn = self._queries_and_keys(q, k)
        state = DecodeState(x.shape[1], k=TokenCache(kn, self.window_size - 1), v=TokenCache(v, self.window_size - 1))
        if self.pool_size:  # S_j = Σ_{t <= j}: what `rank_prefix` sums, position by position
            state.update(k_sums=TokenCache(torch.cumsum(k, dim=2)), v_sums=TokenCache(torch.cumsum(v, dim=2)))
        return out, state

    def _pooled(self, sums: torch.Tensor, count: int) -> torch.Tensor:
        """The P segment means of the first `count` tokens from their running sums (B, H, count, Dh), by the
        binning rule of `cab.ops.pooling`: Σ over ranks [lo, hi) = S_(hi−1) − S_(lo−1), S_(−1) = 0."""
        lo, hi = segment_bounds(torch.tensor(count, device=sums.device), self.pool_size)  # (P,) each

        def at(ranks):  # Σ of the ranks before each bound: (B, H, P, Dh)
            picked = sums.index_select(2, (ranks - 1).clamp(min=0))
            return picked.masked_fill((ranks == 0)[:, None], 0.0)
        return (at(hi) - at(lo)) / (hi - lo).to(sums.dtype)[:, None]

    def step(self, x_t, state):
        i, w = state.position, self.window_size
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        qs, qn, kn = self._queries_and_keys(q, k)
        keys, values = state["k"].extend(kn), state["v"].extend(v)  # the window: positions i-m..i
        slots = slice(w - keys.shape[2], w)  # their window slots (the last ones: earlier slots are before 0)
        scores = qs @ keys.transpose(-1, -2) + self.rel_pos_bias[..., slots]  # (B, H, 1, m+1)
        if self.pool_size:
            # S_i = S_(i−1) + k_i joins the running sums (the prompt had at least one token)
            k_pool = self._pooled(state["k_sums"].extend(state["k_sums"].view()[:, :, -1:] + k), i + 1)
            v_pool = self._pooled(state["v_sums"].extend(state["v_sums"].view()[:, :, -1:] + v), i + 1)
            if self.qk_norm:
                k_pool = F.normalize(k_pool, dim=-1)
            attn = torch.softmax(torch.cat([scores, qs @ k_pool.transpose(-1, -2)], dim=-1), dim=-1)  # one softmax
            a_loc, a_pool = attn[..., : keys.shape[2]], attn[..., keys.shape[2] :]
        else:
            a_loc = torch.softmax(scores, dim=-1)
        a_loc = a_loc + (qn @ self.learnable_tokens + self.learnable_bias)[..., slots]  # + q·T + b
        out = a_loc @ values + (a_pool @ v_pool if self.pool_size else 0)  # (B, H, 1, Dh)
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state

