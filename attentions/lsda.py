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

Both are `cab.ops.window_attention` with before = after = 0 and block = G (exact=False: a group sees
itself; causal=True adds the causal mask): SDA on the sequence, LDA on the sequence reordered so that
each of its groups is G adjacent tokens.

Cost per head: 4·L·G·Dh (SDA) and 4·Lp·G·Dh (LDA), Lp = L rounded up to a multiple of I·G.
Memory O(L·G) per head. Reference: dense softmax attention with each head's group mask.
Decode (causal): the SDA heads keep their last G − 1 keys and values (the most a token reads of its own
group before it), the LDA heads their last I·G − 1 (their window); token i reads, of those and its own,
the suffix from its group's start (SDA) and every I-th back to its window's start (LDA): slices, no mask.
state_size = 2·Dh·(h_SDA·min(G − 1, n) + h_LDA·min(I·G − 1, n)), O(G·I·Dh) per token and head.
"""

from __future__ import annotations

import torch

import torch.nn.functional as F

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    TokenCache,
    ceil_div,
    keep_mask,
    pad_to_multiple,
    softmax_attention,
    window_attention,
    window_attention_flops,
)

_NO_CROSS = "groups of adjacent and interval-sampled tokens are defined on one sequence's positions; a cross source has no aligned groups"


@register_attention(
    "lsda",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="sparse",
    paper={"title": "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention",
           "authors": "Wang et al.", "venue": "ICLR", "year": 2022, "url": "https://arxiv.org/abs/2108.00154"},
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

    def _groups(self, q, k, v, key_valid):
        """Softmax attention inside consecutive groups of G tokens (causal: a causal mask inside each group).
        q, k, v: (B, h, L, Dh), key_valid (B, L) or None -> (B, h, L, Dh)."""
        return window_attention(q, k, v, 0, 0, block=self.group_size, exact=False, causal=self.causal,
                                key_valid=key_valid)

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape  # (B, H, L, Dh)
        g, i_, hs, hl = self.group_size, self.interval, self.short_heads, self.num_heads - self.short_heads
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        # SDA: groups of G adjacent tokens
        sda = self._groups(q[:, :hs], k[:, :hs], v[:, :hs], None if key_padding_mask is None else keep)
        if not hl:
            return sda
        # LDA: windows of I·G tokens (Lp = L rounded up to whole windows); group r of a window = its tokens at
        # offsets r, r+I, r+2I, ...: reordered so that every group is G adjacent tokens, it is SDA again
        lp = self._padded_length(length)
        nw = lp // (g * i_)

        def to_groups(t):  # (B, X, L, Y) -> (B, X, Lp, Y) in group order (zero/False padded); slots keep position order
            t = pad_to_multiple(t, g * i_, dim=2)
            return t.reshape(*t.shape[:2], nw, g, i_, -1).transpose(3, 4).reshape(t.shape)

        lq, lk, lv = (to_groups(t[:, hs:]) for t in (q, k, v))  # (B, hl, Lp, Dh)
        lda = self._groups(lq, lk, lv, to_groups(keep[:, None, :, None])[:, 0, :, 0])  # (B, hl, Lp, Dh), group order
        lda = lda.reshape(b, hl, nw, i_, g, d).transpose(3, 4).reshape(b, hl, lp, d)[:, :, :length]
        return torch.cat([sda, lda], dim=1)

    def reference_attend(self, q, k, v, key_padding_mask):
        """Dense softmax attention with each head's group mask (L×L)."""
        b, h, length, d = q.shape
        g, i_ = self.group_size, self.interval
        i = torch.arange(length, device=q.device)[:, None]
        j = torch.arange(length, device=q.device)[None, :]
        short = (i // g) == (j // g)  # the same group of G adjacent tokens
        long = ((i // (g * i_)) == (j // (g * i_))) & ((i % i_) == (j % i_))  # same window, same offset mod I
        allowed = torch.stack([short] * self.short_heads + [long] * (h - self.short_heads))[None]  # (1, H, L, L)
        if self.causal:
            allowed = allowed & (j <= i)
        allowed = allowed & keep_mask(key_padding_mask, b, length, q.device)[:, None, None, :]
        return softmax_attention(q, k, v, allowed)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        # G×G scores and ·V per group: SDA over the L tokens, LDA over the Lp of whole windows
        d, g, hs = self.head_dim, self.group_size, self.short_heads
        sda = window_attention_flops(batch, hs, len_q, d, d, 0, 0, g)
        lda = window_attention_flops(batch, self.num_heads - hs, self._padded_length(len_q), d, d, 0, 0, g)
        return sda + (lda if self.num_heads > hs else 0)

    def state_size(self, seq_len: int) -> int | None:
        # causal streaming form: the current SDA group (G tokens) and the current LDA window's
        # sampled tokens (I·G at most), keys and values, per head half
        if not self.causal:
            return None
        g, span = self.group_size, self.group_size * self.interval
        return 2 * self.head_dim * (self.short_heads * min(g - 1, seq_len)
                                    + (self.num_heads - self.short_heads) * min(span - 1, seq_len))

    # -- decode: the SDA heads' last G - 1 keys and values, the LDA heads' last I·G - 1 ---------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out = self.out_proj(self.merge_heads(self.attend(q, k, v, None)))
        hs, g, span = self.short_heads, self.group_size, self.group_size * self.interval
        return out, DecodeState(x.shape[1], k_short=TokenCache(k[:, :hs], g - 1), v_short=TokenCache(v[:, :hs], g - 1),
                                k_long=TokenCache(k[:, hs:], span - 1), v_long=TokenCache(v[:, hs:], span - 1))

    def step(self, x_t, state):
        i, hs, g, interval = state.position, self.short_heads, self.group_size, self.interval
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        # SDA: its group's tokens up to i, the newest i - ⌊i/G⌋·G + 1 (a suffix)
        visible = i - (i // g) * g + 1
        keys, values = state["k_short"].extend(k[:, :hs]), state["v_short"].extend(v[:, :hs])
        outs = [F.scaled_dot_product_attention(q[:, :hs], keys[:, :, -visible:], values[:, :, -visible:])]
        if self.num_heads > hs:  # LDA: positions j ≡ i (mod I) from its window's start, every I-th back from i
            back = i - (i // (g * interval)) * (g * interval)  # positions since the window's start
            keys, values = state["k_long"].extend(k[:, hs:]), state["v_long"].extend(v[:, hs:])
            first = keys.shape[2] - 1 - interval * (back // interval)
            outs.append(F.scaled_dot_product_attention(q[:, hs:], keys[:, :, first::interval],
                                                       values[:, :, first::interval]))
        state.position += 1
        return self.out_proj(self.merge_heads(torch.cat(outs, dim=1))), state
