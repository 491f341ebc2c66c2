"""Global–local cross attention (GLCA), from "Dual Cross-Attention Learning for Fine-Grained Visual
Categorization and Object Re-Identification" (Zhu, Ke, Li, Liu, Tian, Shan, CVPR 2022).

GLCA ranks the queries by accumulated attention (attention rollout, Ŝ = 0.5·A + 0.5·I, averaged
over heads) and lets only the top R of them — the "local" discriminative tokens — attend to all the
global keys and values; the others pass through:

    r_j = mean_i Ŝ_ij                       (accumulated attention that token j receives)
    out_i = softmax(q_i Kᵀ/√Dh) V           for the top-R tokens by r (R = ⌈0.1·L⌉ by default)
    out_i = v_i                             otherwise (the identity part of the rollout)

Port: DCAL reads the rollout row of the CLS token over several layers; a 1-D sequence has no CLS
token and one layer has one attention map, so the ranking uses the mean rollout row over all
queries of this layer's attention. The rollout needs the full L×L attention map (this is the
algorithm, and the reason for O(L²) cost); it is computed one chunk of queries at a time and
reduced to column sums, never stored whole. Large non-matmul work: the softmax over L² scores.

Cost: 2·L²·dim (scores for the ranking) + 4·R·L·dim (the selected queries' attention).
Reference (`reference_attend`): the whole L×L attention map, its rollout, top-R, A·V for the chosen rows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import allowed_mask, keep_mask, masked_softmax, sdpa_mask, softmax_attention_flops

@register_attention(
    "glca",
    patterns={Pattern.NONCAUSAL_SELF},
    unsupported={
        Pattern.CAUSAL_SELF: "the top-R selection ranks every position by attention from all queries, so it depends on later positions",
        Pattern.NONCAUSAL_CROSS: "queries are ranked by the attention they receive as keys, which needs queries and keys from one sequence",
        Pattern.CAUSAL_CROSS: "queries are ranked by the attention they receive as keys, which needs queries and keys from one sequence",
    },
    family="routed",
    paper={"title": "Dual Cross-Attention Learning for Fine-Grained Visual Categorization and Object Re-Identification",
           "authors": "Zhu et al.", "venue": "CVPR", "year": 2022, "url": "https://arxiv.org/abs/2205.02151"},
)
class GlobalLocalCrossAttention(MultiHeadAttention):
    """DCAL global–local cross attention (Zhu et al. 2022) with a one-layer rollout ranking."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, top_ratio: float = 0.1, chunk_size: int = 512):
        super().__init__(dim, num_heads, pattern)
        if not 0 < top_ratio <= 1:
            raise ValueError("top_ratio must be in (0, 1]")
        self.top_ratio = top_ratio
        self.chunk_size = chunk_size

    def rollout_scores(self, q, k, keep, key_padding_mask):
        """r_j = mean over real queries i and heads of 0.5·A_ij + 0.5·δ_ij. -> (B, L), -inf at padding."""
        b, h, length, d = q.shape
        col = q.new_zeros(b, h, length)
        allowed = allowed_mask(key_padding_mask, length, length)  # (B, 1, 1, L) real keys, or None
        for s in range(0, length, self.chunk_size):
            scores = (q[:, :, s : s + self.chunk_size] @ k.transpose(-1, -2)) * d**-0.5  # (B, H, c, L)
            a = masked_softmax(scores, allowed)
            if key_padding_mask is not None:
                a = a * keep[:, None, s : s + self.chunk_size, None].to(a.dtype)  # padded queries do not vote
            col = col + a.sum(dim=2)
        n = keep.sum(dim=1, keepdim=True).clamp(min=1).to(q.dtype)  # (B, 1)
        r = 0.5 * col.mean(dim=1) / n + 0.5 / n
        return r.masked_fill(~keep, float("-inf"))

    def top_count(self, keep):
        """R per example, ⌈top_ratio · real tokens⌉ (at least 1): (B,) long."""
        return torch.ceil(keep.sum(dim=1).to(torch.float64) * self.top_ratio).long().clamp(min=1)

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape  # (B, H, L, Dh)
        keep = keep_mask(key_padding_mask, b, length, q.device)
        with torch.no_grad():  # the ranking is a selection, not a differentiable path
            r = self.rollout_scores(q, k, keep, key_padding_mask)  # (B, L)
        count = self.top_count(keep)  # R per example
        r_max = int(count.max())
        idx = r.topk(r_max, dim=1).indices  # (B, R)
        chosen = torch.arange(r_max, device=q.device)[None, :] < count[:, None]  # (B, R)
        gidx = idx[:, None, :, None].expand(-1, h, -1, d)  # (B, H, R, Dh)
        q_sel = q.gather(2, gidx)  # (B, H, R, Dh)
        mask, _ = sdpa_mask(key_padding_mask, False, r_max, length)
        o_sel = F.scaled_dot_product_attention(q_sel, k, v, attn_mask=mask)  # (B, H, R, Dh)
        o_sel = torch.where(chosen[:, None, :, None], o_sel, v.gather(2, gidx))
        return v.scatter(2, gidx, o_sel)  # unselected tokens pass through as their own values

    def reference_attend(self, q, k, v, key_padding_mask):
        """A = softmax(QKᵀ/√Dh) over real keys, all L×L at once; r = mean over heads and real rows of
        0.5·A + 0.5·I; the top-R real tokens by r take A·V, the others keep V."""
        b, h, length, d = q.shape
        keep = keep_mask(key_padding_mask, b, length, q.device)
        a = masked_softmax(q @ k.transpose(-1, -2) * d**-0.5, keep[:, None, None, :])  # (B, H, L, L)
        rollout = 0.5 * a + 0.5 * torch.eye(length, dtype=q.dtype)
        out = v.clone()
        for bi, r in enumerate(self.top_count(keep).tolist()):
            rows = rollout[bi][:, keep[bi]][:, :, keep[bi]]  # (H, n, n): real queries and keys
            score = rows.mean(0).mean(0)  # (n,)
            top = keep[bi].nonzero().flatten()[score.topk(r).indices]
            out[bi, :, top] = a[bi, :, top] @ v[bi]
        return out

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        r = math.ceil(len_q * self.top_ratio)
        ranking = batch * 2 * len_q * len_k * self.dim  # the scores of the rollout (the softmax is not a matmul)
        return ranking + softmax_attention_flops(batch, self.num_heads, r, len_k, self.head_dim, self.head_dim)
