"""Cross attention with a causal cross-attention mask (CCAM), from "Video-CCAM: Enhancing
Video-Language Understanding with Causal Cross-Attention Masks for Short and Long Videos" (Fei, Li,
Deng, Wang, Liu, Wang, 2024).

A set of queries reads a temporally ordered source (video frames' tokens). Plain cross attention
ignores the order, so CCAM masks it: the queries are spread evenly over the source's timeline and
query i sees only the source positions up to its aligned time,

    query i may attend key j  ⇔  rank(j) · N < (i + 1) · n_k

where rank(j) is j's index among the real (non-padded) source tokens, n_k their number and N the
number of query slots. Every query sees at least the first source token; the last sees all.

N is the query count Lq (Video-CCAM's fixed learnable query set) unless `num_queries` fixes it. In
the causal-cross pattern, output i must not depend on how many queries follow it, so N cannot be
Lq there: it is `num_queries`, default 1024. Port: frames become source positions; nothing else
changes. Dense masked attention: cost as softmax, 4·Lq·Lk·dim; the mask is an Lq×Lk boolean tensor
(the algorithm is a dense masked cross attention), through F.scaled_dot_product_attention.
Reference (`reference_attend`): the mask built query by query from each example's real source tokens,
then the dense masked softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import keep_mask, masked_softmax, sdpa_mask, softmax_attention_flops

_NO_SELF = "CCAM masks a query set reading a separate, temporally ordered source; on one sequence it is plain causal softmax"
CAUSAL_CROSS_QUERIES = 1024


@register_attention(
    "ccam",
    patterns={Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.NONCAUSAL_SELF: _NO_SELF, Pattern.CAUSAL_SELF: _NO_SELF},
    family="sparse",
    paper={"title": "Video-CCAM: Enhancing Video-Language Understanding with Causal Cross-Attention Masks for Short and Long Videos",
           "authors": "Fei et al.", "venue": "arXiv", "year": 2024, "url": "https://arxiv.org/abs/2408.14023"},
)
class CausalCrossMaskAttention(MultiHeadAttention):
    """Video-CCAM cross attention (Fei et al. 2024) with its causal cross-attention mask."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_queries: int | None = None, use_mask: bool = True):
        super().__init__(dim, num_heads, pattern)
        if num_queries is None and self.pattern is Pattern.CAUSAL_CROSS:
            num_queries = CAUSAL_CROSS_QUERIES
        self.num_queries = num_queries
        self.use_mask = use_mask

    def ccam_mask(self, len_q: int, keep: torch.Tensor) -> torch.Tensor:
        """keep: (B, Lk) real source tokens -> (B, 1, Lq, Lk) bool, True = may attend."""
        n_slots = self.num_queries or len_q
        rank = torch.cumsum(keep.to(torch.long), dim=1) - 1  # (B, Lk)
        n_k = keep.sum(dim=1, keepdim=True)  # (B, 1)
        i = torch.arange(1, len_q + 1, device=keep.device)  # i + 1
        visible = rank[:, None, :] * n_slots < i[None, :, None] * n_k[:, :, None]  # (B, Lq, Lk)
        return (visible & keep[:, None, :])[:, None]

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        if self.use_mask:
            mask = self.ccam_mask(q.shape[2], keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device))
        else:
            mask, _ = sdpa_mask(key_padding_mask, False, q.shape[2], k.shape[2])
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def reference_attend(self, q, k, v, key_padding_mask):
        """softmax(QKᵀ/√Dh) V over the allowed keys: query i sees the real source tokens of rank r with
        r·N < (i + 1)·n_k, listed example by example."""
        b, _, len_q, d = q.shape
        keep = keep_mask(key_padding_mask, b, k.shape[2], k.device)
        n_slots = self.num_queries or len_q
        allowed = torch.zeros(b, 1, len_q, k.shape[2], dtype=torch.bool)
        for bi in range(b):
            real = keep[bi].nonzero().flatten().tolist()  # positions of the real tokens, in rank order
            for i in range(len_q):
                for rank, j in enumerate(real):
                    allowed[bi, 0, i, j] = not self.use_mask or rank * n_slots < (i + 1) * len(real)
        return masked_softmax(q @ k.transpose(-1, -2) * d**-0.5, allowed) @ v

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # QKᵀ and ·V in full (the mask is applied, not exploited): 4·Lq·Lk·dim
        return softmax_attention_flops(batch, self.num_heads, len_q, len_k, self.head_dim, self.head_dim)
