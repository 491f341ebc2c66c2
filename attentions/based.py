"""Based (Arora, Eyuboglu, Zhang et al., ICML 2024, "Simple linear attention language models balance
the recall-throughput tradeoff"): linear attention with a 2nd-order Taylor feature map, plus a small
sliding-window softmax attention for exact local recall.

    q̃, k̃ = x W_q̃, x W_k̃                     # (B, H, L, f): a small feature dim f (default 16)
    φ(x) = [1, x/d^{1/4}, vech(x xᵀ)/√(2d)]  # so φ(q̃)·φ(k̃) = 1 + s + s²/2 with s = q̃·k̃/√f  (d = f)
    y_lin_i = φ(q̃_i)ᵀ Σ_j φ(k̃_j) v_jᵀ / (φ(q̃_i)ᵀ Σ_j φ(k̃_j) + eps)     (j <= i when causal)
    y_win_i = softmax_{|i-j| <= w, j <= i}(q_i·k_j/√Dh) v_j                (self patterns only)
    out = W_o (y_lin + y_win)

φ keeps the upper triangle of x xᵀ (off-diagonal terms ×√2 folded in), as fla's TaylorFeatureMap:
f' = 1 + f + f(f+1)/2 features (153 for f = 16) instead of Zoology's 1 + f + f²; the kernel value is
identical. Causal: the chunked form of `cab.kernels.causal_linear_attention` (no L×L); noncausal and
cross: the sums are one f'×(Dh+1) matrix per head. The window part is Zoology's sliding window
(`_part2_common.sliding_window_attention`, O(L·w)); it needs aligned positions, so the cross patterns
use the linear part alone (window = 0 there). In the Based paper the two parts are separate layers of
a hybrid stack; here they share the value projection and are summed, so one layer carries both.

Recurrent form: per head S = Σ φ(k)vᵀ (f'×Dh) and z = Σ φ(k) (f'), plus the window's cache of
`window` past keys and values (2·window·Dh per head):
    state_size = H·(f'·Dh + f') + 2·dim·window     (Zoology's Based counts the first term).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import zero_padded_keys
from cab.kernels import causal_linear_attention, causal_linear_flops

from ._part2_common import sliding_window_attention, sliding_window_flops


def taylor_feature_map(x: torch.Tensor) -> torch.Tensor:
    """x: (..., f) -> (..., 1 + f + f(f+1)/2) with φ(a)·φ(b) = 1 + s + s²/2, s = a·b/√f."""
    f = x.shape[-1]
    rows, cols = torch.triu_indices(f, f, device=x.device)
    coef = torch.where(rows == cols, 1.0 / math.sqrt(2.0), 1.0).to(x.dtype) / math.sqrt(f)  # x_i x_j / √f (·1/√2 on diag)
    second = x[..., rows] * x[..., cols] * coef
    return torch.cat([torch.ones_like(x[..., :1]), x / f**0.25, second], dim=-1)


def taylor_feature_size(f: int) -> int:
    return 1 + f + f * (f + 1) // 2


@register_attention("based", patterns=set(Pattern))
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

    def features(self, t: torch.Tensor) -> torch.Tensor:  # (B, L, H·f) -> (B, H, L, f)
        b, length, _ = t.shape
        return t.view(b, length, self.num_heads, self.feature_dim).transpose(1, 2)

    def linear_part(self, fq, fk, v, key_padding_mask):
        """fq: (B, H, Lq, f), fk: (B, H, Lk, f), v: (B, H, Lk, Dh) -> (B, H, Lq, Dh)."""
        phi_q = taylor_feature_map(fq)  # (B, H, Lq, f')
        phi_k = zero_padded_keys(taylor_feature_map(fk), key_padding_mask)  # padded keys add nothing
        v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, Lk, Dh+1): last column = normaliser
        if self.causal:
            num_den = causal_linear_attention(phi_q, phi_k, v1, self.chunk_size)
        else:
            num_den = phi_q @ (phi_k.transpose(-1, -2) @ v1)  # (B, H, Lq, Dh+1)
        return num_den[..., :-1] / (num_den[..., -1:] + self.eps)

    def forward(self, x, context=None, key_padding_mask=None):
        source = self.check_inputs(x, context)
        v = self.split_heads(self.v_proj(source))  # (B, H, Lk, Dh)
        out = self.linear_part(self.features(self.fq_proj(x)), self.features(self.fk_proj(source)), v, key_padding_mask)
        if self.window > 0:
            q = self.split_heads(self.q_proj(x))
            k = self.split_heads(self.k_proj(source))
            out = out + sliding_window_attention(q, k, v, self.window, self.causal, key_padding_mask)
        return self.out_proj(self.merge_heads(out))

    # -- cost -------------------------------------------------------------------------------------
    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        dim, h, f, d = self.dim, self.num_heads, self.feature_dim, self.head_dim
        fp = taylor_feature_size(f)
        proj = 2 * batch * dim * h * f * (len_q + len_k) + 2 * batch * dim * dim * (len_k + len_q)  # feature, v, out
        if self.causal:  # chunked: QKᵀ, ·[V 1], KᵀV and Q·S per chunk
            lin = causal_linear_flops(batch, h, len_q, fp, d + 1, self.chunk_size)
        else:  # φ(K)ᵀ[V 1] then φ(Q)·that
            lin = batch * h * 2 * fp * (d + 1) * (len_k + len_q)
        if self.window > 0:
            proj += 2 * batch * dim * dim * (len_q + len_k)  # q and k projections of the window part
            lin += sliding_window_flops(batch, h, len_q, d, d, self.window, self.causal)
        return proj + lin

    def state_size(self, seq_len: int) -> int:
        fp = taylor_feature_size(self.feature_dim)
        linear = self.num_heads * (fp * self.head_dim + fp)  # S and z per head
        return linear + 2 * self.dim * min(self.window, seq_len)  # + the window's KV cache
