"""Long–short distance attention (LSDA), from "CrossFormer: A Versatile Vision Transformer Hinging
on Cross-Scale Attention" (Wang, Yao, Chen, Lin, Cai, He, Liu, ICLR 2022).

Short-distance attention (SDA): tokens are grouped by adjacency, groups of G neighbours, and attend
within their group. Long-distance attention (LDA): tokens sampled at a fixed interval I form a
group (token j joins group j mod I), and attend within it. In CrossFormer an image of side S = I·G
is one LDA window, so each LDA group holds G×G tokens spread over the whole map.

Port: the 7×7 group becomes G = 49 adjacent tokens; LDA works inside windows of I·G tokens (the
paper's whole map), group r of a window = its tokens at positions ≡ r (mod I), so cost stays
linear for any L; CrossFormer alternates SDA and LDA by block, here they are combined per head in
one layer (the first ⌈H/2⌉ heads SDA, the rest LDA). Causal: a causal mask inside every group
(groups are fixed from position 0, so a prefix sees the same groups).

Cost per head: 4·Lp·G·Dh with Lp = L rounded up to a multiple of I·G. Memory O(L·G) per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention

from ._part3_common import ceil_div, keep_mask, masked_attend

_NO_CROSS = "groups of adjacent and interval-sampled tokens are defined on one sequence's positions; a cross source has no aligned groups"


@register_attention(
    "lsda",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class LongShortDistanceAttention(MultiHeadAttention):
    """CrossFormer LSDA (Wang et al. 2022): SDA heads + LDA heads."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, group_size: int = 49, interval: int = 8):
        super().__init__(dim, num_heads, pattern)
        if group_size < 1 or interval < 1:
            raise ValueError("group_size and interval must be >= 1")
        self.group_size = group_size
        self.interval = interval
        self.short_heads = -(-num_heads // 2)  # the first ⌈H/2⌉ heads: SDA; the rest: LDA

    def _padded_length(self, length: int) -> int:
        span = self.group_size * self.interval
        return ceil_div(length, span) * span

    def _group_attend(self, q, k, v, keep):
        # q, k, v: (B, h, n, G, Dh); keep: (B, n, G) -> (B, h, n, G, Dh)
        allowed = keep[:, None, :, None, :]  # (B, 1, n, 1, G)
        if self.causal:  # inside a group, slot order is position order
            g = self.group_size
            allowed = allowed & torch.ones(g, g, dtype=torch.bool, device=q.device).tril()
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, h, n, G, G)
        return masked_attend(scores, allowed, v)

    def attend(self, q, k, v, key_padding_mask):
        b_, h_, length, d = q.shape  # (B, H, L, Dh)
        g, i_ = self.group_size, self.interval
        lp = self._padded_length(length)
        keep = F.pad(keep_mask(key_padding_mask, b_, length, q.device), (0, lp - length), value=False)  # (B, Lp)
        q, k, v = (F.pad(t, (0, 0, 0, lp - length)) for t in (q, k, v))  # (B, H, Lp, Dh)
        hs = self.short_heads
        outs = []
        # SDA: groups of G adjacent tokens
        sq, sk, sv = (t[:, :hs].reshape(b_, hs, lp // g, g, d) for t in (q, k, v))
        outs.append(self._group_attend(sq, sk, sv, keep.view(b_, lp // g, g)).reshape(b_, hs, lp, d))
        hl = h_ - hs
        if hl:
            # LDA: windows of I·G tokens; group r of a window = its tokens at offsets r, r+I, r+2I, ...
            nw = lp // (g * i_)

            def to_groups(t):  # (B, hl, Lp, Dh) -> (B, hl, nw·I, G, Dh)
                return t.reshape(b_, hl, nw, g, i_, d).transpose(3, 4).reshape(b_, hl, nw * i_, g, d)

            lq, lk, lv = (to_groups(t[:, hs:]) for t in (q, k, v))
            lkeep = keep.view(b_, nw, g, i_).transpose(2, 3).reshape(b_, nw * i_, g)
            lo = self._group_attend(lq, lk, lv, lkeep)  # (B, hl, nw·I, G, Dh)
            outs.append(lo.reshape(b_, hl, nw, i_, g, d).transpose(3, 4).reshape(b_, hl, lp, d))
        return torch.cat(outs, dim=1)[:, :, :length]

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # every head, SDA or LDA: Lp/G groups × (QKᵀ 2·G²·Dh + ·V 2·G²·Dh) = 4·Lp·G·Dh
        return 4 * batch * self._padded_length(len_q) * self.group_size * self.dim

    def state_size(self, seq_len: int) -> int | None:
        # causal streaming form: the current SDA group (G tokens) and the current LDA window's
        # sampled tokens (I·G at most), keys and values, per head half
        if not self.causal:
            return None
        hd = self.head_dim
        return 2 * hd * (self.short_heads * self.group_size + (self.num_heads - self.short_heads) * self.group_size * self.interval)
