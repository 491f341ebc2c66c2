"""Bidirectional lookup attention, from "LookupViT: Compressing Visual Information to a Limited
Number of Tokens" (Koner, Jain, Jain, Tresp, Paul, ECCV 2024).

A fixed number M of compressed tokens is pooled from the full ("lookup") tokens. In one layer:
  1. gather:    compressed tokens read the full tokens by cross attention, S = Q_c Kᵀ (M × Lk);
  2. compress:  full self-attention among the M compressed tokens (with a residual);
  3. propagate: full tokens read back from the compressed tokens, reusing the same affinities
                transposed (the bidirectional exchange: softmax of Sᵀ over the M compressed tokens).

    z   = pool_M(source)                               (B, M, dim)
    Z   = softmax_k(Q_c Kᵀ/√Dh) V,   Q_c = W_q z       (B, H, M, Dh)
    Z'  = Z + MHSA(Z)
    out = softmax_m(K_x Q_cᵀ/√Dh) (W_v' Z')            K_x = W_k x: for self exactly Sᵀ

Port: the compressed tokens come from 1-D average pooling of the real tokens into M segments, the
binning rule of `cab.ops.pooling` (LookupViT resizes the 2-D map to e.g. 7×7; default M = 49; fewer
real tokens than M repeat, as resizing up does); the layer norms and FFNs of the
paper's blocks are left to the backbone. Cross: the compressed tokens are pooled from the source
and the target tokens read back with W_k x as their affinity side; each target token reads the
same compressed tokens independently, so causal cross holds. Cost O((Lq + Lk)·M·dim + M²·dim).
Reference (`reference_forward`): the three steps dense, the pooling by loops, and the read-back scores
recomputed as K_x Q_cᵀ also for self (the fast form reuses the gather scores transposed).
"""

from __future__ import annotations

from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import keep_mask, masked_softmax, segment_means, segment_means_reference, softmax_attention


@register_attention(
    "lookup",
    patterns={Pattern.NONCAUSAL_SELF, Pattern.NONCAUSAL_CROSS, Pattern.CAUSAL_CROSS},
    unsupported={Pattern.CAUSAL_SELF: "the compressed tokens pool and read the whole sequence, so outputs depend on later inputs"},
    family="low-rank",
    paper={"title": "LookupViT: Compressing visual information to a limited number of tokens",
           "authors": "Koner et al.", "venue": "ECCV", "year": 2024, "url": "https://arxiv.org/abs/2407.12753"},
)
class LookupAttention(MultiHeadAttention):
    """LookupViT multi-head bidirectional cross attention (Koner et al. 2024), 1-D."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, num_compressed: int = 49):
        super().__init__(dim, num_heads, pattern)
        self.num_compressed = num_compressed
        # q_proj acts on the compressed tokens (Q_c); k_proj, v_proj on the full tokens
        self.c_qkv = nn.Linear(dim, 3 * dim)  # compressed-token self-attention
        self.c_out = nn.Linear(dim, dim)
        self.c_v = nn.Linear(dim, dim)  # values the full tokens read back (W_v')

    def compress(self, source, keep):
        """source: (B, Lk, dim) -> compressed tokens (B, M, dim), valid (B, M) (False only without real tokens)."""
        return segment_means(source, keep, self.num_compressed)

    def forward(self, x, context=None, key_padding_mask=None):
        source = self.check_inputs(x, context)
        b, lk, _ = source.shape
        keep = keep_mask(key_padding_mask, b, lk, source.device)  # (B, Lk)
        real_keys = None if key_padding_mask is None else keep[:, None, None, :]  # (B, 1, 1, Lk)
        scale = self.head_dim**-0.5
        z, valid = self.compress(source, keep)  # (B, M, dim), (B, M)
        compressed = None if key_padding_mask is None else valid[:, None, None, :]  # all True unless no real token
        qc = self.split_heads(self.q_proj(z))  # (B, H, M, Dh)
        k = self.split_heads(self.k_proj(source))  # (B, H, Lk, Dh)
        v = self.split_heads(self.v_proj(source))  # (B, H, Lk, Dh)
        s = (qc @ k.transpose(-1, -2)) * scale  # gather scores (B, H, M, Lk)
        gathered = masked_softmax(s, real_keys) @ v  # (B, H, M, Dh)

        zc = self.merge_heads(gathered)  # (B, M, dim)
        q2, k2, v2 = (self.split_heads(t) for t in self.c_qkv(zc).chunk(3, dim=-1))  # (B, H, M, Dh)
        zc = zc + self.c_out(self.merge_heads(softmax_attention(q2, k2, v2, compressed)))  # (B, M, dim)
        vz = self.split_heads(self.c_v(zc))  # (B, H, M, Dh)

        if self.pattern.is_cross:
            kx = self.split_heads(self.k_proj(x))  # (B, H, Lq, Dh)
            back = (kx @ qc.transpose(-1, -2)) * scale  # (B, H, Lq, M)
        else:
            back = s.transpose(-1, -2)  # (B, H, L, M): the gather affinities, reused
        out = masked_softmax(back, compressed) @ vz  # (B, H, Lq, Dh)
        return self.out_proj(self.merge_heads(out))

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """Gather, compress, propagate written out densely, compressed tokens pooled by loops."""
        source = self.check_inputs(x, context)
        b, lk, _ = source.shape
        keep = keep_mask(key_padding_mask, b, lk, source.device)
        scale = self.head_dim**-0.5
        z, valid = segment_means_reference(source, keep, self.num_compressed)  # (B, M, dim), (B, M)
        qc = self.split_heads(self.q_proj(z))
        k, v = self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))
        zc = self.merge_heads(masked_softmax(qc @ k.transpose(-1, -2) * scale, keep[:, None, None, :]) @ v)  # Z
        q2, k2, v2 = (self.split_heads(t) for t in self.c_qkv(zc).chunk(3, dim=-1))
        mixed = masked_softmax(q2 @ k2.transpose(-1, -2) * scale, valid[:, None, None, :]) @ v2
        zc = zc + self.c_out(self.merge_heads(mixed))  # Z' = Z + MHSA(Z)
        kx = self.split_heads(self.k_proj(x))  # K_x = W_k x (for self: the gather's keys)
        back = masked_softmax(kx @ qc.transpose(-1, -2) * scale, valid[:, None, None, :])  # (B, H, Lq, M)
        return self.out_proj(self.merge_heads(back @ self.split_heads(self.c_v(zc))))

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        d, m = self.dim, self.num_compressed
        proj = 2 * d * d * (m + 2 * len_k + len_q)  # W_q on z, W_k/W_v on the source, out_proj
        if self.pattern.is_cross:
            proj += 2 * d * d * len_q  # W_k on the target tokens
        gather = 4 * m * len_k * d  # Q_c Kᵀ and ·V
        compress = 2 * d * d * (3 + 1 + 1) * m + 4 * m * m * d  # c_qkv, c_out, c_v; M×M attention
        back = 2 * len_q * m * d * (2 if self.pattern.is_cross else 1)  # (K_x Q_cᵀ) and ·V'
        return batch * (proj + gather + compress + back)
