"""Based (Arora, Eyuboglu, Zhang et al., ICML 2024, "Simple linear attention language models balance
the recall-throughput tradeoff"): linear attention with a 2nd-order Taylor feature map, plus a small
sliding-window softmax attention for exact local recall.

    q̃, k̃ = x W_q̃, x W_k̃                     # (B, H, L, f): a small feature dim f (default 16)
    φ(x) = [1, x/d^{1/4}, vech(x xᵀ)/√(2d)]  # so φ(q̃)·φ(k̃) = 1 + s + s²/2 with s = q̃·k̃/√f  (d = f)
    y_lin_i = φ(q̃_i)ᵀ Σ_j φ(k̃_j) v_jᵀ / (φ(q̃_i)ᵀ Σ_j φ(k̃_j) + eps)     (j <= i when causal)
    y_win_i = softmax_{i-w <= j <= i (+w noncausal)}(q_i·k_j/√Dh) v_j       (self patterns only)
    out = W_o (y_lin + y_win)

Ops: φ is `cab.ops.taylor_feature_map` (the upper triangle of x xᵀ, off-diagonal terms ×√2 folded in,
as fla's TaylorFeatureMap: f' = 1 + f + f(f+1)/2 features, 153 for f = 16, instead of Zoology's
1 + f + f²; the kernel value is identical); y_lin is `linear_attention` (causal: chunked, no L×L;
noncausal and cross: one f'×(Dh+1) matrix per head); y_win is `window_attention` with Zoology's band
(`slide_attn.py`: keys i-w..i causal, |i-j| <= w noncausal), in query blocks of w: O(L·w). The
window needs aligned positions, so the cross patterns use the linear part alone (window = 0 there).
In the Based paper the two parts are separate layers of a hybrid stack; here they share the value
projection and are summed, so one layer carries both. Reference: `linear_attention_reference` plus
`softmax_attention` under the dense `window_allowed` mask.

Speed: at 16,384 tokens (dim 512, 8 heads, one thread) the layer runs at ≈40% of the machine's
matmul rate, at the zoo's target: its core is a linear attention over 153 features per head (built
elementwise from 16) and a window whose blocks of w queries score 2w (3w) keys, half of them masked.

Recurrent form: per head S = Σ φ(k)vᵀ (f'×Dh) and z = Σ φ(k) (f'), plus the window's cache of
`window` past keys and values (2·window·Dh per head):
    state_size = H·(f'·Dh + f') + 2·dim·window     (Zoology's Based counts the first term).
Decode: one `linear_attention_step` on [S z] and the window's softmax over its cache and the new token,
O(H·f'·Dh + window·dim) per token at any context.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (
    TokenCache,
    linear_attention,
    linear_attention_flops,
    linear_attention_reference,
    linear_attention_step,
    softmax_attention,
    taylor_feature_map,
    taylor_feature_size,
    window_allowed,
    window_attention,
    window_attention_flops,
)


@register_attention(
    "based", patterns=set(Pattern),
    family="linear",
    paper={"title": "Simple linear attention language models balance the recall-throughput tradeoff",
           "authors": "Arora et al.", "venue": "ICML", "year": 2024, "url": "https://arxiv.org/abs/2402.18668"},
)
class BasedAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, feature_dim: int = 16, window: int = 64,
                 eps: float = 1e-12, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)
        self.feature_dim = feature_dim
        self.window = window if not self.pattern.is_cross else 0  # the window needs aligned positions
        self.eps = eps
        self.chunk_size = chunk_size
        self.fq_proj = nn.Linear(dim, num_heads * feature_dim, bias=False)
        self.fk_proj = nn.Linear(dim, num_heads * feature_dim, bias=False)

    def features(self, t):  # (B, L, H·f) -> (B, H, L, f)
        b, length, _ = t.shape
        return t.view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)

    def _band(self) -> tuple[int, int]:
        """(before, after) of the window: keys i-w..i (causal) or i-w..i+w."""
        return self.window, (0 if self.causal else self.window)

    def _project(self, x, context):
        """-> φ(q̃) (B, H, Lq, f'), φ(k̃) (B, H, Lk, f'), v (B, H, Lk, Dh), and the window's q, k (B, H, L, Dh)."""
        source = self.check_inputs(x, context)
        phi_q = taylor_feature_map(self.features(self.fq_proj(x)))
        phi_k = taylor_feature_map(self.features(self.fk_proj(source)))
        v = self.split_heads(self.v_proj(source))
        if self.window == 0:
            return phi_q, phi_k, v, None, None
        return phi_q, phi_k, v, self.split_heads(self.q_proj(x)), self.split_heads(self.k_proj(source))

    def forward(self, x, context=None, key_padding_mask=None):
        phi_q, phi_k, v, q, k = self._project(x, context)
        out = linear_attention(phi_q, phi_k, v, causal=self.causal, key_padding_mask=key_padding_mask, eps=self.eps,
                               chunk_size=self.chunk_size)  # (B, H, Lq, Dh)
        if self.window > 0:
            out = out + window_attention(q, k, v, *self._band(), block=self.window, causal=self.causal,
                                         key_padding_mask=key_padding_mask)
        return self.out_proj(self.merge_heads(out))

    def reference_forward(self, x, context=None, key_padding_mask=None):
        phi_q, phi_k, v, q, k = self._project(x, context)
        out = linear_attention_reference(phi_q, phi_k, v, causal=self.causal, key_padding_mask=key_padding_mask,
                                         eps=self.eps)
        if self.window > 0:
            allowed = window_allowed(q.shape[2], *self._band(), key_padding_mask=key_padding_mask, device=q.device)
            out = out + softmax_attention(q, k, v, allowed)
        return self.out_proj(self.merge_heads(out))

    # -- cost -------------------------------------------------------------------------------------
    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        dim, h, f, d = self.dim, self.num_heads, self.feature_dim, self.head_dim
        proj = 2 * batch * dim * h * f * (len_q + len_k) + 2 * batch * dim * dim * (len_k + len_q)  # feature, v, out
        core = linear_attention_flops(batch, h, len_q, len_k, taylor_feature_size(f), d, causal=self.causal,
                                      chunk_size=self.chunk_size)
        if self.window > 0:
            proj += 2 * batch * dim * dim * (len_q + len_k)  # q and k projections of the window part
            core += window_attention_flops(batch, h, len_q, d, d, *self._band(), block=self.window)
        return proj + core

    def state_size(self, seq_len: int) -> int:
        fp = taylor_feature_size(self.feature_dim)
        linear = self.num_heads * (fp * self.head_dim + fp)  # S and z per head
        return linear + 2 * self.dim * min(self.window, seq_len)  # + the window's KV cache

    # -- decode: [S z] (B, H, f', Dh+1) and the window's last `window` keys and values -------------
    def prefill(self, x):
        self.check_decode(x)
        phi_q, phi_k, v, q, k = self._project(x, None)
        out, s = linear_attention(phi_q, phi_k, v, causal=True, eps=self.eps, chunk_size=self.chunk_size,
                                  return_final_state=True)  # (B, H, L, Dh), (B, H, f', Dh+1)
        state = DecodeState(x.shape[1], s=s)
        if self.window > 0:
            out = out + window_attention(q, k, v, *self._band(), block=self.window, causal=True)
            state.update(k=TokenCache(k, self.window), v=TokenCache(v, self.window))
        return self.out_proj(self.merge_heads(out)), state

    def step(self, x_t, state):
        phi_q, phi_k, v, q, k = self._project(x_t, None)  # (B, H, 1, ·)
        out, state["s"] = linear_attention_step(phi_q[:, :, 0], phi_k[:, :, 0], v[:, :, 0], state["s"], eps=self.eps)
        out = out[:, :, None]  # (B, H, 1, Dh)
        if self.window > 0:  # the cache holds keys i-w..i-1, the token brings its own: the whole band
            out = out + F.scaled_dot_product_attention(q, state["k"].extend(k), state["v"].extend(v))
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state
