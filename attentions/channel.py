"""Channel group attention, from "DaViT: Dual Attention Vision Transformers" (Ding, Xiao, Codella,
Luo, Wang, Yuan, ECCV 2022).

Channels are the tokens: the channels are split into groups (the heads, Cg = Dh channels each) and
every group attends over a Cg×Cg channel–channel matrix built from the whole sequence, so each
channel sees a global summary of all positions:

    A = softmax_row(Kᵀ V · Cg^-½)    (Dh × Dh per head, a sum over all key positions)
    out_i = A q_i                     (each position mixes its own channels with A)

The roles of Q, K, V follow DaViT's released code (the matrix from k and v, applied to q); the
paper writes the same product with the names permuted. With the matrix built from the source and
applied to the target, it is a cross attention, and queries never interact (causal cross holds).

Causal self: the matrix for position i is built from the prefix statistics Σ_{j≤i} k_j v_jᵀ (the
recurrent state), computed chunk by chunk, with a softmax per position. Large non-matmul work in
that form: per position and head, a Dh×Dh outer product, prefix sum and softmax (≈ 3·L·dim·Dh
elementwise operations plus L·dim·Dh exponentials), Dh/2 times the counted FLOPs (the apply, 2·Dh²
per position and head). So the causal layer's rate in GFLOP/s is a few per cent of the machine's
matmul rate (about 6% at 16,384 tokens, dim 512, 8 heads): that is the algorithm, a softmax over
Dh×Dh numbers per position, not its implementation. Chunks of C = 16 positions (was 128): the
(C, Dh, Dh) statistics of a chunk then stay in cache across the passes over them, about 1.3×
faster at 8,192 tokens; the scale is applied to k and the carried state is added to the chunk's
first position before the prefix sum, one pass over the L·Dh² statistics fewer each.

Port: the P = H·W image tokens become the L sequence positions; nothing else changes.
Reference: the statistics of every position as one masked (Lq×Lk) sum, its softmax applied to q_i.
Cost per head: noncausal 2·Lk·Dh² + 2·Lq·Dh²; causal 2·L·Dh² counted (the apply). Memory O(L·Dh)
plus, causal, one chunk of Dh×Dh states.
Decode (causal): the statistics Σ k_j v_jᵀ·Dh^-½ (Dh×Dh per head) plus the token's k vᵀ, their softmax
applied to q: O(H·Dh²) per token at any context.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import causal_mask, zero_padding


@contextmanager
def _subnormals_as_zero(device: torch.device):
    """The CPU's flush-to-zero / denormals-are-zero mode for the causal loop. Its per-position
    softmax sharpens as the prefix sums grow, so the exponentials underflow into subnormals, which
    x86 computes through slow microcode assists: per-token time grew past L = 8192 (time exponent
    1.26 over 8192-32768; benchmarks/results/channel_subnormals.md: at 32768, 591-707 µs per token
    without the mode, 444-491 with it; no difference at 4096). The values it zeroes are below 1.2e-38, which `_flush_subnormal` zeroes
    anyway. torch has no getter for the mode: it is switched off again afterwards."""
    on = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if on:
            torch.set_flush_denormal(False)


def _flush_subnormal(p: torch.Tensor) -> torch.Tensor:
    """Zero softmax weights below the smallest normal number. The channel statistics are sums over
    the whole sequence, so the logits grow with L and a long sequence's softmax is full of
    subnormal weights, which make the CPU matmul that applies them many times slower (seen as a
    time slope of 2.3 between L = 4096 and 16384). Changes each weight by < 1.2e-38 (float32)."""
    return p.masked_fill(p < torch.finfo(p.dtype).tiny, 0.0)


@register_attention(
    "channel", patterns=set(Pattern),
    family="other",
    paper={"title": "DaViT: Dual Attention Vision Transformers",
           "authors": "Ding et al.", "venue": "ECCV", "year": 2022, "url": "https://arxiv.org/abs/2204.03645"},
)
class ChannelAttention(MultiHeadAttention):
    """DaViT channel group attention (Ding et al. 2022); heads are the channel groups."""

    def __init__(self, dim: int, num_heads: int, pattern: Pattern, chunk_size: int = 16):
        super().__init__(dim, num_heads, pattern)
        self.chunk_size = chunk_size

    def attend(self, q, k, v, key_padding_mask):
        # q: (B, H, Lq, Dh); k, v: (B, H, Lk, Dh)
        d = q.shape[-1]
        scale = d**-0.5
        k = zero_padding(k, key_padding_mask)  # padding adds nothing to the channel statistics
        if not self.causal:
            attn = _flush_subnormal(torch.softmax((k.transpose(-1, -2) @ v) * scale, dim=-1))  # (B, H, Dh, Dh)
            return q @ attn.transpose(-1, -2)  # (B, H, Lq, Dh): out_i = A q_i
        b, h, length, _ = q.shape
        k = k * scale  # the logits' scale on the L×Dh keys, not on the L×Dh×Dh statistics
        state = None  # Σ_{j < chunk start} k_j v_jᵀ (scaled), (B, H, Dh, Dh)
        outs = []
        with _subnormals_as_zero(q.device):
            for s in range(0, length, self.chunk_size):
                kc, vc, qc = (t[:, :, s : s + self.chunk_size] for t in (k, v, q))
                outer = kc.unsqueeze(-1) * vc.unsqueeze(-2)  # (B, H, C, Dh, Dh): k_j v_jᵀ
                if state is not None:  # the carried statistics enter with the chunk's first position
                    outer[:, :, 0] += state
                prefix = torch.cumsum(outer, dim=2)  # (B, H, C, Dh, Dh): Σ_{j <= i} k_j v_jᵀ
                attn = _flush_subnormal(torch.softmax(prefix, dim=-1))  # (B, H, C, Dh, Dh), one per position
                outs.append((attn @ qc.unsqueeze(-1)).squeeze(-1))  # (B, H, C, Dh)
                state = prefix[:, :, -1]
        return torch.cat(outs, dim=2)

    def reference_attend(self, q, k, v, key_padding_mask):
        """Dense: position i's statistics Σ_j m_ij k_j v_jᵀ as one masked sum over all (i, j) (m: j <= i when
        causal, padded j excluded), its own softmax, applied to q_i; no subnormal flushing."""
        len_q, len_k = q.shape[2], k.shape[2]
        m = causal_mask(len_q, len_k, q.device) if self.causal else torch.ones(len_q, len_k, device=q.device).bool()
        m = m[None, None].to(q.dtype)  # (1, 1, Lq, Lk)
        if key_padding_mask is not None:
            m = m * (~key_padding_mask)[:, None, None, :].to(q.dtype)  # (B, 1, Lq, Lk)
        stats = torch.einsum("bhij,bhjd,bhje->bhide", m.expand(-1, q.shape[1], -1, -1), k, v)  # (B, H, Lq, Dh, Dh)
        attn = torch.softmax(stats * q.shape[-1] ** -0.5, dim=-1)
        return (attn @ q.unsqueeze(-1)).squeeze(-1)  # out_i = A_i q_i

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        if self.causal:
            # per position: A_i q_i (2·Dh²); outer products, prefix sums and softmax are elementwise
            return batch * self.num_heads * 2 * len_q * d * d
        # Kᵀ V: 2·Lk·Dh²; A q_i for every query: 2·Lq·Dh², per head
        return batch * self.num_heads * 2 * d * d * (len_k + len_q)

    def state_size(self, seq_len: int) -> int:
        # recurrent form: Σ k_j v_jᵀ, one Dh×Dh matrix per head
        return self.num_heads * self.head_dim * self.head_dim

    # -- decode: the scaled statistics Σ k_j v_jᵀ (B, H, Dh, Dh) ------------------------------------
    def prefill(self, x):
        self.check_decode(x)
        q, k, v = self.self_projections(x)
        out = self.attend(q, k, v, None)
        stats = (k * self.head_dim**-0.5).transpose(-1, -2) @ v  # (B, H, Dh, Dh)
        return self.out_proj(self.merge_heads(out)), DecodeState(x.shape[1], stats=stats)

    def step(self, x_t, state):
        q, k, v = (t[:, :, 0] for t in self.self_projections(x_t))  # (B, H, Dh)
        state["stats"] = state["stats"] + (k * self.head_dim**-0.5)[..., :, None] * v[..., None, :]
        attn = _flush_subnormal(torch.softmax(state["stats"], dim=-1))  # this position's channel matrix
        out = (attn @ q[..., None])[..., 0]  # A q: (B, H, Dh)
        state.position += 1
        return self.out_proj(out.reshape(x_t.shape)), state
