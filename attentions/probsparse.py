"""ProbSparse self-attention (Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence
Time-Series Forecasting", AAAI 2021, best paper).

Only the u most "active" queries get full attention; the rest output mean(V):

    s = c·⌈ln Lk⌉ keys sampled per query, u = c·⌈ln Lq⌉ queries kept (c = `factor`)
    Q K_sampledᵀ                                   (B, H, Lq, s)  gathered per query chunk
    M(q_i) = max_j(q_i·k_j) − Σ_j(q_i·k_j)/Lk        over the sampled j (Informer's sparsity measure)
    top-u queries by M                              (B, H, u)
    O[top] = softmax(Q_top Kᵀ/√Dh) V               (B, H, u, Lk)  u ≪ L rows: O(u·L) memory
    O[rest] = mean_j v_j

Sampling: Informer uses torch.randint; here the sampled key indices are a hash of (query index,
sample index, seed) over the real keys, so eval is deterministic under a seed (the seed is a
buffer drawn at init) and appended padding changes nothing; training draws a fresh seed per call.
Lengths in s and u are the real (unpadded) lengths. Noncausal self only: the top-u selection is
global over queries, the samples include future keys, and Informer's causal branch leaks the same
way; cross is not in the mechanism (Informer uses full attention there).
FLOPs per head: 2·Lq·s·Dh (sampled scores) + 4·u·Lk·Dh (attention of the kept queries);
sort/top-k and the mean are not matrix products. With factor large enough that u = Lq every
query is kept and the output is softmax attention. The kept rows' softmax is `cab.ops.masked_softmax`.
Reference: M from the dense score matrix at the same sampled keys, the top-u rows of dense softmax
attention (`softmax_attention`), mean(V) elsewhere.
Throughput (benchmarks/results/kernel_throughput.md): below 40% of the matmul rate: the sparsity measure
needs a gather of sampled keys per query and a top-u over queries, not matrix products.
"""

from __future__ import annotations

import math

import torch

from cab import MultiHeadAttention, Pattern, register_attention
from cab.ops import keep_mask, masked_softmax, softmax_attention

_WHY = {
    Pattern.CAUSAL_SELF: "the top-u query selection is global and the key samples include future positions",
    Pattern.NONCAUSAL_CROSS: "ProbSparse is a self-attention mechanism (Informer uses full attention for cross)",
    Pattern.CAUSAL_CROSS: "the top-u selection compares all queries, so an output depends on later queries",
}


def _counts(factor: int, length: int) -> int:
    return max(1, min(factor * math.ceil(math.log(max(length, 1))), length)) if length > 1 else 1


def hash_uniform_ints(rows: torch.Tensor, cols: torch.Tensor, seed: int) -> torch.Tensor:
    """A 31-bit pseudo-random integer for each (row, col) pair, a pure function of (row, col, seed):
    prefix-stable, unlike drawing a (rows, cols) tensor from a generator."""
    m = (1 << 31) - 1
    x = (rows[:, None].long() * 1103515245 + cols[None, :].long() * 12345 + (seed % m) * 2654435) % m
    for mult in (48271, 69621, 16807):
        x = (x ^ (x >> 13)) * mult % m
    return x


@register_attention(
    "probsparse", patterns={Pattern.NONCAUSAL_SELF}, unsupported=_WHY,
    family="routed",
    paper={"title": "Informer: Beyond Efficient Transformer for Long Sequence Time-Series Forecasting",
           "authors": "Zhou et al.", "venue": "AAAI", "year": 2021, "url": "https://arxiv.org/abs/2012.07436"},
)
class ProbSparseAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, factor: int = 5, query_chunk: int = 1024):
        super().__init__(dim, num_heads, pattern)
        self.factor = factor
        self.query_chunk = query_chunk
        self.register_buffer("sample_seed", torch.randint(0, 2**31 - 1, ()))

    def sample(self, len_q: int, keep: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The sampled keys of every query, (B, Lq·s) positions among the real keys (keep (B, Lk)), and u."""
        b, dev = keep.shape[0], keep.device
        n_k = keep.sum(1).clamp_min(1)  # (B,)
        s = _counts(self.factor, int(n_k.max()))
        u = min(_counts(self.factor, int(keep.sum(1).max())), len_q)  # self: the real queries are the real keys
        seed = int(self.sample_seed) if not self.training else int(torch.randint(0, 2**31 - 1, ()))
        r = hash_uniform_ints(torch.arange(len_q, device=dev), torch.arange(s, device=dev), seed)  # (Lq, s)
        idx_real = r[None] % n_k[:, None, None]  # (B, Lq, s): index among the real keys
        real_pos = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # real keys first, in order
        return torch.gather(real_pos, 1, idx_real.reshape(b, -1)), u

    def attend(self, q, k, v, key_padding_mask):
        b, h, len_q, d = q.shape
        keep = keep_mask(key_padding_mask, b, k.shape[-2], q.device)  # (B, Lk); self: also the real queries
        n_k = keep.sum(1).clamp_min(1)  # (B,)
        key_idx, u = self.sample(len_q, keep)  # (B, Lq·s)
        s = key_idx.shape[1] // len_q

        m_parts = []  # M(q_i) = max_j q_i·k_j − Σ_j q_i·k_j / Lk over the sampled j, per query chunk
        for start in range(0, len_q, self.query_chunk):
            stop = min(start + self.query_chunk, len_q)
            k_s = torch.stack([k[i].index_select(1, key_idx[i, start * s : stop * s]) for i in range(b)])
            k_s = k_s.view(b, h, stop - start, s, d)  # (B, H, chunk, s, Dh)
            qk = torch.einsum("bhqd,bhqsd->bhqs", q[:, :, start:stop], k_s)  # (B, H, chunk, s)
            m_parts.append(qk.amax(-1) - qk.sum(-1) / n_k[:, None, None].to(qk.dtype))
        m = torch.cat(m_parts, dim=-1)  # (B, H, Lq)
        m = m.masked_fill(~keep[:, None, :], float("-inf"))
        top = m.topk(u, dim=-1).indices  # (B, H, u)

        q_top = torch.gather(q, 2, top[..., None].expand(b, h, u, d))  # (B, H, u, Dh)
        scores = (q_top * d**-0.5) @ k.transpose(-1, -2)  # (B, H, u, Lk)
        out_top = masked_softmax(scores, keep[:, None, None, :]) @ v  # (B, H, u, Dh)
        v_mean = (v * keep[:, None, :, None]).sum(2, keepdim=True) / n_k[:, None, None, None].to(v.dtype)
        out = v_mean.expand(b, h, len_q, d).clone()
        return out.scatter(2, top[..., None].expand(b, h, u, d), out_top)

    def reference_attend(self, q, k, v, key_padding_mask):
        """Dense: M from the full score matrix at the sampled keys; the top-u rows of dense softmax
        attention, mean(V) elsewhere."""
        b, h, len_q, d = q.shape
        keep = keep_mask(key_padding_mask, b, k.shape[-2], q.device)
        n_k = keep.sum(1).clamp_min(1).to(q.dtype)
        key_idx, u = self.sample(len_q, keep)
        s = key_idx.shape[1] // len_q
        scores = q @ k.transpose(-1, -2)  # (B, H, Lq, Lk)
        sampled = torch.gather(scores, 3, key_idx.view(b, 1, len_q, s).expand(b, h, len_q, s))  # (B, H, Lq, s)
        m = (sampled.amax(-1) - sampled.sum(-1) / n_k[:, None, None]).masked_fill(~keep[:, None, :], float("-inf"))
        active = torch.zeros_like(m, dtype=torch.bool).scatter(2, m.topk(u, dim=-1).indices, True)  # (B, H, Lq)
        v_mean = (v * keep[:, None, :, None]).sum(2, keepdim=True) / n_k[:, None, None, None]
        full = softmax_attention(q, k, v, keep[:, None, None, :])  # (B, H, Lq, Dh)
        return torch.where(active[..., None], full, v_mean)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        s, u, d = _counts(self.factor, len_k), min(_counts(self.factor, len_q), len_q), self.head_dim
        return batch * self.num_heads * (2 * len_q * s * d + 4 * u * len_k * d)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", factor={self.factor}"
