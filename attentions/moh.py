"""MoH: Mixture-of-Head attention (Jin et al., 2024, "MoH: Multi-Head Attention as Mixture-of-Head
Attention"; SkyworkAI/MoH).

Heads are experts. h_s shared heads are always active; of the other H - h_s ("routed") heads a
per-token router activates the top k. Each token's output is a weighted sum of its head outputs:

    o_h      = softmax(Q_h K_hᵀ/√Dh) V_h                           # every head, (B, L, Dh)
    g_r      = softmax(x W_r)  (H - h_s);  keep top-k, renormalise, ×k      # routed gates
    g_s      = softmax(x W_s) ×h_s  (all ones ×1 if h_s = 1)                # shared gates
    (α1, α2) = softmax(x W_0) ×2                                            # shared vs routed balance
    out      = W_o concat_h(gate_h · o_h),  gate = [α1 g_s, α2 g_r]

The router reads the query-side input x at each position, so routing is per query and all four
patterns hold. As in the reference implementation every head's attention is computed and the
inactive ones are multiplied by 0, so the FLOPs are dense softmax attention's plus the router; the
saving is nominal on a CPU. The load-balancing loss of the paper (mean gate × fraction routed ×
(H - h_s)²) is stored in `self.aux_loss` in training mode. Defaults follow the paper's 75%-active
configurations: h_s = H/4 shared (at least 1), k such that about 3/4 of the heads are active.
Reference: the heads by the dense masked form (`cab.ops.softmax_attention`), times the same gates.
Decode form (causal self): a KV cache of every head (2·dim·L numbers per example, the inactive heads'
keys too: a later token may route to them); a generated token's gates come from its own input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, UnsupportedConfigError, register_attention
from cab.attention import kv_cache_size
from cab.ops import allowed_mask, sdpa_mask, softmax_attention


@register_attention(
    "moh", patterns=set(Pattern),
    family="routed",
    paper={"title": "MoH: Multi-Head Attention as Mixture-of-Head Attention",
           "authors": "Jin et al.", "venue": "arXiv", "year": 2024, "url": "https://arxiv.org/abs/2410.11842"},
)
class MixtureOfHeadAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, shared_heads: int | None = None,
                 top_k: int | None = None):
        super().__init__(dim, num_heads, pattern)
        self.shared_heads = max(1, num_heads // 4) if shared_heads is None else shared_heads
        self.routed_heads = num_heads - self.shared_heads
        active = max(self.shared_heads + 1, round(0.75 * num_heads))
        self.top_k = min(self.routed_heads, active - self.shared_heads if top_k is None else top_k)
        if self.routed_heads <= 0 or self.top_k <= 0:
            raise UnsupportedConfigError(f"moh routes among heads: it needs a shared and a routed head and top_k >= 1 "
                                         f"(num_heads={num_heads}, shared_heads={self.shared_heads}, "
                                         f"top_k={self.top_k})")
        self.router = nn.Linear(dim, self.routed_heads, bias=False)  # W_r
        self.shared_router = nn.Linear(dim, self.shared_heads, bias=False) if self.shared_heads > 1 else None  # W_s
        self.balance = nn.Linear(dim, 2, bias=False) if self.shared_heads > 0 else None  # W_0
        self.aux_loss = None
        self._x = None

    def head_gates(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, Lq, dim) -> per-token head weights (B, Lq, H), 0 for inactive routed heads."""
        gates = F.softmax(self.router(x), dim=-1)  # (B, Lq, H - h_s)
        top = torch.topk(gates, self.top_k, dim=-1).indices
        mask = torch.zeros_like(gates).scatter_(-1, top, 1.0)
        if self.training:
            self.aux_loss = (gates.mean(dim=(0, 1)) * mask.mean(dim=(0, 1))).mean() * self.routed_heads**2
        routed = gates * mask
        routed = routed / routed.sum(-1, keepdim=True).clamp(min=torch.finfo(x.dtype).eps) * self.top_k
        if self.shared_heads == 0:
            return routed
        if self.shared_router is not None:
            shared = F.softmax(self.shared_router(x), dim=-1) * self.shared_heads
        else:
            shared = torch.ones_like(x[..., : self.shared_heads])
        w = F.softmax(self.balance(x), dim=-1) * 2  # (B, Lq, 2)
        return torch.cat([w[..., :1] * shared, w[..., 1:] * routed], dim=-1)

    def project_and_attend(self, core, x, context, key_padding_mask):
        self._x = x  # the router reads the query-side input (for `attend` and `reference_attend` alike)
        try:
            return super().project_and_attend(core, x, context, key_padding_mask)
        finally:
            self._x = None

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        mask, is_causal = sdpa_mask(key_padding_mask, self.causal, q.shape[-2], k.shape[-2], q.device)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, H, Lq, Dh)
        gates = self.head_gates(self._x)  # (B, Lq, H)
        return heads * gates.transpose(1, 2)[..., None]

    def reference_attend(self, q, k, v, key_padding_mask):
        allowed = allowed_mask(key_padding_mask, q.shape[-2], k.shape[-2], self.causal)
        return softmax_attention(q, k, v, allowed) * self.head_gates(self._x).transpose(1, 2)[..., None]

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        attention = 4 * batch * len_q * len_k * self.dim  # every head, as the reference computes them
        router = 2 * batch * len_q * self.dim * (self.routed_heads + (self.shared_heads if self.shared_router else 0) + 2)
        return attention + router

    def state_size(self, seq_len: int) -> int | None:
        return kv_cache_size(self.dim, seq_len) if self.causal else None  # the KV cache of the decode form

    # -- decode: a KV cache; each token's heads weighted by its own gates --------------------------
    def prefill(self, x):
        self._x = x
        try:
            return self.kv_cache_prefill(x)
        finally:
            self._x = None

    def step(self, x_t, state):
        gates = self.head_gates(x_t).transpose(1, 2)[..., None]  # (B, H, 1, 1) from the token's input
        return self.kv_cache_step(x_t, state, lambda q, k, v: F.scaled_dot_product_attention(q, k, v) * gates)
