"""Bi-level Routing Attention (Zhu et al., CVPR 2023, "BiFormer: Vision Transformer with Bi-Level
Routing Attention"; rayleizhu/BiFormer `ops/bra_legacy.py`), ported to 1-D sequences.

The sequence is cut into regions of S tokens (BiFormer: an S×S grid of image regions).

    Q^r, K^r = region-level queries and keys (mean over each region's tokens, all heads together)
    A^r      = Q^r (K^r)ᵀ                                   # (n × n) region affinity, n = L/S
    I^r      = topk(A^r, k)                                 # k routed regions per query region
    K^g, V^g = gather(K, I^r), gather(V, I^r)               # (n, k·S, Dh) per head
    O        = softmax(Q K^gᵀ/√Dh) V^g + LCE(V)              # token attention inside the routed regions
LCE is BiFormer's local context enhancement, a depthwise conv on V (kernel 5; causal: left-padded).
Routing is shared by the heads, as in BiFormer. Cost per token O(k·S·Dh) plus the n×n affinity
(L²/S² per example, small): no L×L tensor.

Block-causal form (causal self): a region may route only to earlier regions (top k of them) and
always attends to itself with a token-level causal mask. The region-level query of a causal region
cannot be the mean of its tokens (later tokens would steer the routing of earlier ones), so it is
the query of the region's first token, the only region summary every token of the region may see.
With k >= number of regions both forms equal dense (causal) softmax attention (LCE off).
Padding: padded keys are masked, region means count only real tokens, all-padding regions are
never routed to. The token attention is `cab.ops.softmax_attention` on the gathered regions.
Reference: dense softmax attention over the L×L mask of the routed regions, plus the same LCE.
Decode (causal): a KV cache (every region may be routed to), the key of every complete region, the current
region's routing (top-k earlier regions, decided at its first token) and LCE's last k−1 values; a token
reads its routed regions and its own region so far: O(k·S·dim) per token, the cache O(L·dim).
state_size = 2·dim·n + dim·⌊n/S⌋ + min(topk, ⌊(n−1)/S⌋) + dim·(lce_kernel − 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import TokenCache, ceil_div, keep_mask, pad_to_multiple, softmax_attention


@register_attention(
    "routing",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
    unsupported={
        Pattern.NONCAUSAL_CROSS: "not ported: the 1-D port cuts one sequence into regions (BiFormer is self-attention)",
        Pattern.CAUSAL_CROSS: "queries of a region share one routing decision, so outputs depend on later queries",
    },
    family="routed",
    paper={"title": "BiFormer: Vision Transformer with Bi-Level Routing Attention",
           "authors": "Zhu et al.", "venue": "CVPR", "year": 2023, "url": "https://arxiv.org/abs/2303.08810"},
)
class BiLevelRoutingAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, region_size: int = 64, topk: int = 4,
                 lce_kernel: int = 5):
        super().__init__(dim, num_heads, pattern)
        self.region_size = region_size
        self.topk = topk
        self.lce_kernel = lce_kernel
        if lce_kernel:
            self.lce = nn.Conv1d(dim, dim, lce_kernel, groups=dim)

    def regions(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, L, Dh) -> (B, H, n, S, Dh), zero-padded to whole regions of S = min(region_size, L)."""
        b, h, length, d = t.shape
        s = min(self.region_size, length)
        return pad_to_multiple(t, s).view(b, h, ceil_div(length, s), s, d)

    def route(self, q, k, keep):
        """Top-k routed regions. q, k: (B, H, n, S, Dh); keep: (B, n, S) -> idx (B, n, k), ok (B, n, k)."""
        b, h, n, s, d = q.shape
        keepf = keep[:, None, :, :, None].to(q.dtype)
        k_region = (k * keepf).sum(3) / keepf.sum(3).clamp(min=1.0)  # (B, H, n, Dh)
        if self.causal:
            q_region = q[:, :, :, 0]  # the region's first token
        else:
            q_region = (q * keepf).sum(3) / keepf.sum(3).clamp(min=1.0)
        flat = lambda t: t.transpose(1, 2).reshape(b, n, h * d)  # all heads together, (B, n, dim)
        affinity = flat(q_region) @ flat(k_region).transpose(-1, -2)  # (B, n, n)
        blocked = ~keep.any(-1)[:, None, :].expand(b, n, n)  # all-padding regions
        if self.causal:  # only strictly earlier regions are routed; the own region is always attended
            blocked = blocked | torch.ones(n, n, dtype=torch.bool, device=q.device).triu()  # j >= i
        affinity = affinity.masked_fill(blocked, float("-inf"))
        kk = max(1, min(self.topk, n - 1 if self.causal else n))
        top = torch.topk(affinity, kk, dim=-1)
        return top.indices, top.values > float("-inf")

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape
        qr, kr, vr = (self.regions(t) for t in (q, k, v))  # (B, H, n, S, Dh)
        n, s = qr.shape[2], qr.shape[3]
        keep = pad_to_multiple(keep_mask(key_padding_mask, b, length, q.device), s, dim=-1).view(b, n, s)  # (B, n, S)

        idx, ok = self.route(qr, kr, keep)  # (B, n, k)
        kk = idx.shape[-1]
        gather_idx = idx.reshape(b, 1, n * kk, 1).expand(b, h, n * kk, s * d)
        k_sel = kr.reshape(b, h, n, s * d).gather(2, gather_idx).reshape(b, h, n, kk * s, d)  # (B, H, n, k·S, Dh)
        v_sel = vr.reshape(b, h, n, s * d).gather(2, gather_idx).reshape(b, h, n, kk * s, d)
        sel_keep = keep.gather(1, idx.reshape(b, n * kk, 1).expand(b, n * kk, s)).reshape(b, n, kk, s)
        sel_keep = (sel_keep & ok[..., None]).reshape(b, n, 1, kk * s).expand(b, n, s, kk * s)  # (B, n, S, k·S)
        if self.causal:  # plus the own region, token-causal
            k_sel, v_sel = torch.cat([k_sel, kr], dim=3), torch.cat([v_sel, vr], dim=3)
            own = torch.ones(s, s, dtype=torch.bool, device=q.device).tril() & keep[:, :, None, :]  # (B, n, S, S)
            sel_keep = torch.cat([sel_keep, own], dim=-1)
        out = softmax_attention(qr, k_sel, v_sel, sel_keep[:, None])  # (B, H, n, S, Dh)
        return out.reshape(b, h, n * s, d)[:, :, :length] + self.local_context(v, key_padding_mask)

    def reference_attend(self, q, k, v, key_padding_mask):
        """Dense softmax attention over the L×L mask of the routed regions (the routing decision is `route`'s)."""
        b, h, length, d = q.shape
        s = min(self.region_size, length)
        n = ceil_div(length, s)
        keep = keep_mask(key_padding_mask, b, length, q.device)
        idx, ok = self.route(self.regions(q), self.regions(k), pad_to_multiple(keep, s, dim=-1).view(b, n, s))
        routed = torch.zeros(b, n, n, dtype=torch.bool, device=q.device).scatter(-1, idx, ok)  # (B, n, n)
        region = torch.arange(length, device=q.device) // s
        allowed = routed[:, region][:, :, region]  # (B, L, L): key j's region is routed for query i's region
        if self.causal:  # plus the own region, token-causal
            i, j = region[:, None], region[None, :]
            allowed = allowed | ((i == j) & torch.ones(length, length, dtype=torch.bool, device=q.device).tril())
        allowed = allowed[:, None] & keep[:, None, None, :]  # (B, 1, L, L)
        return softmax_attention(q, k, v, allowed) + self.local_context(v, key_padding_mask)

    def local_context(self, v, key_padding_mask):
        """LCE(V): a depthwise convolution over the real values (causal: left-padded); 0 when lce_kernel = 0."""
        if not self.lce_kernel:
            return 0
        vk = v if key_padding_mask is None else v * (~key_padding_mask)[:, None, :, None].to(v.dtype)
        vf = self.merge_heads(vk).transpose(1, 2)  # (B, dim, L)
        pad = (self.lce_kernel - 1, 0) if self.causal else (self.lce_kernel // 2, (self.lce_kernel - 1) // 2)
        return self.split_heads(self.lce(F.pad(vf, pad)).transpose(1, 2))

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        s = min(self.region_size, len_q)
        n = ceil_div(len_q, s)
        kk = max(1, min(self.topk, n - 1 if self.causal else n))
        keys = (kk + (1 if self.causal else 0)) * s  # keys per query
        attention = 4 * n * s * keys * self.dim  # scores and weights·V, all heads
        routing = 2 * n * n * self.dim  # region affinity
        lce = 2 * len_q * self.dim * self.lce_kernel if self.lce_kernel else 0
        return batch * (attention + routing + lce)

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        regions, current = seq_len // self.region_size, (seq_len - 1) // self.region_size
        lce = self.dim * (self.lce_kernel - 1) if self.lce_kernel else 0
        return 2 * self.dim * seq_len + self.dim * regions + min(self.topk, current) + lce

    # -- decode: the KV cache, the complete regions' keys, the current region's routes, LCE's inputs --
    def _flat(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, n, Dh) -> (B, n, dim): all heads together, as `route` compares regions."""
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], self.dim)

    def _routes(self, q_first: torch.Tensor, region_keys: torch.Tensor) -> torch.Tensor:
        """The top-k earlier regions of a region, from its first token's query (B, dim) and the region keys
        (B, c, dim) of the c regions before it -> indices (B, min(topk, c)), as `route` picks them."""
        kk = min(self.topk, region_keys.shape[1])
        affinity = (q_first[:, None] @ region_keys.transpose(-1, -2))[:, 0]  # (B, c)
        return torch.topk(affinity, kk, dim=-1).indices

    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        s = self.region_size
        q, k, v = self.self_projections(x)
        out = self.out_proj(self.merge_heads(self.attend(q, k, v, None)))
        done = length // s  # complete regions
        region_keys = self._flat(k[:, :, : done * s].reshape(b, self.num_heads, done, s, self.head_dim).sum(3) / s)  # (B, c, dim)
        current = (length - 1) // s  # the region of the last token
        routes = self._routes(self._flat(q[:, :, current * s, None])[:, 0], region_keys[:, :current])
        state = DecodeState(length, k=TokenCache(k), v=TokenCache(v), region_keys=TokenCache(region_keys[:, None]),
                            routes=routes)
        if self.lce_kernel:
            state["lce"] = F.pad(self.merge_heads(v).transpose(1, 2), (self.lce_kernel - 1, 0))[:, :, length:]
        return out, state

    def step(self, x_t, state):
        i, s = state.position, self.region_size
        first = (i // s) * s  # this token's region starts here
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        keys, values = state["k"].extend(k), state["v"].extend(v)  # (B, H, i+1, Dh)
        if i == first:  # a new region: route it once, by its first token's query, among the complete regions
            state["routes"] = self._routes(self._flat(q)[:, 0], state["region_keys"].view()[:, 0])
        b, h, _, d = keys.shape
        routed = (state["routes"][:, :, None] * s + torch.arange(s, device=x_t.device)).reshape(b, 1, -1, 1)
        pick = routed.expand(b, h, routed.shape[2], d)  # positions of the routed regions' tokens
        keys = torch.cat([keys.gather(2, pick), keys[:, :, first:]], dim=2)  # routed regions + own region so far
        values = torch.cat([values.gather(2, pick), values[:, :, first:]], dim=2)
        out = softmax_attention(q, keys, values)  # (B, H, 1, Dh)
        if self.lce_kernel:  # LCE: the depthwise conv over the last k values
            window = torch.cat([state["lce"], self.merge_heads(v).transpose(1, 2)], dim=-1)  # (B, dim, k)
            lce = (window * self.lce.weight[:, 0]).sum(-1) + self.lce.bias  # (B, dim)
            out = out + self.split_heads(lce[:, None])
            state["lce"] = window[..., 1:]
        if i - first == s - 1:  # the region is complete: its key joins the routable ones
            region_key = self._flat(state["k"].view()[:, :, first : first + s].sum(2, keepdim=True) / s)  # (B, 1, dim)
            state["region_keys"].extend(region_key[:, None])
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state
