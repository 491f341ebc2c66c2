"""Landmark Attention (Mohtashami & Jaggi, NeurIPS 2023, "Landmark Attention: Random-Access
Infinite Context Length for Transformers"; epfml/landmark-attention `models/landmark.py`).

The sequence is cut into blocks of ℓ tokens (`--mem_freq 50`), each represented by a landmark key.
For a query i in block c, the grouped softmax gives

    w        = softmax([ q_i·lk_g/√Dh  for retrieved blocks g ] ++ [ q_i·k_j/√Dh  for j in block c, j <= i ])
    p_g(j)   = softmax_{j in block g}(q_i·k_j/√Dh)                        # inside each retrieved block
    o_i      = Σ_g w_g Σ_{j in g} p_g(j) v_j  +  Σ_{j in c} w_j v_j

so attending to a token of another block costs its block's landmark weight times its share inside
the block. Retrieval (the paper's inference): each query and head retrieves the top-k blocks by
landmark score (k = 4); `top_k=None` retrieves every block (the training form, O(L²)).
Here queries are processed in chunks of about `query_chunk` positions: landmark scores (L·L/ℓ per
head, so the method is sub-quadratic by a factor ℓ, not linear), then the gathered keys of the k
retrieved blocks (k·ℓ per query) and the own block. Memory O(query_chunk·(L/ℓ + k·ℓ)·Dh): no L×L.

Landmark keys: in the paper a landmark token is inserted into the input after every block and
learns its key through the stack; a drop-in layer cannot add tokens, so here the landmark key of a
block is the mean of its (real) keys plus a learned per-head landmark vector (zero at init).
Causal self: only earlier, complete blocks are retrievable, the own block is token-causal.
Noncausal: every other block is retrievable and the own block is fully visible.
Padding: padded keys are masked inside blocks and left out of landmark means; all-padding blocks
are never retrieved.

Short sequences (n·ℓ <= `DENSE_MAX_KEYS` keys): gathering k·ℓ keys per query copies k·ℓ·Dh numbers
per query, and the gather's backward is a scatter, which makes training at L = 256 several times
slower than dense attention. There the same sum is taken densely: every query scores every key
(n·ℓ per query, a matrix product), and the weights w_g·p_g(j) are zero outside the retrieved
blocks. The two paths are equal (tested); `core_flops` counts the path that runs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention

from ._part2_common import pad_length, safe_softmax

DENSE_MAX_KEYS = 1024  # up to this many keys, retrieved blocks are read densely (see the docstring)

_CROSS = "not ported: landmarks and the own-block softmax are defined on one sequence (the paper is a decoder LM)"


@register_attention(
    "landmark",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _CROSS, Pattern.CAUSAL_CROSS: _CROSS},
)
class LandmarkAttention(MultiHeadAttention):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, block_size: int = 50, top_k: int | None = 4,
                 query_chunk: int = 512):
        super().__init__(dim, num_heads, pattern)
        self.block_size = block_size
        self.top_k = top_k
        self.query_chunk = query_chunk
        self.landmark = nn.Parameter(torch.zeros(num_heads, self.head_dim))

    def _k_eff(self, n: int) -> int:
        return n if self.top_k is None else max(1, min(self.top_k, n))

    def attend(self, q, k, v, key_padding_mask):
        b, h, length, d = q.shape
        ell = min(self.block_size, length)
        qp, kp, vp = (pad_length(t, ell) for t in (q, k, v))
        n = qp.shape[2] // ell
        keep = (torch.arange(n * ell, device=q.device) < length).expand(b, n * ell)
        if key_padding_mask is not None:
            keep = keep & ~pad_length(key_padding_mask.float(), ell, dim=-1, value=1.0).bool()
        keep = keep.reshape(b, n, ell)  # (B, n, ℓ)
        qb, kb, vb = (t.reshape(b, h, n, ell, d) for t in (qp, kp, vp))
        keepf = keep[:, None, :, :, None].to(q.dtype)
        lk = (kb * keepf).sum(3) / keepf.sum(3).clamp(min=1.0) + self.landmark.to(q.dtype)[None, :, None]  # (B, H, n, Dh)
        block_ok = keep.any(-1)  # (B, n)
        scale = 1.0 / math.sqrt(d)
        kk = self._k_eff(n)
        step = max(1, self.query_chunk // ell)
        outs = []
        for c0 in range(0, n, step):
            c1 = min(n, c0 + step)
            outs.append(self._chunk(qb[:, :, c0:c1], kb, vb, lk, keep, block_ok, c0, kk, scale))
        return torch.cat(outs, dim=2).reshape(b, h, n * ell, d)[:, :, :length]

    def _chunk(self, q, kb, vb, lk, keep, block_ok, c0, kk, scale):
        """q: (B, H, nc, ℓ, Dh) for blocks c0..c0+nc -> (B, H, nc, ℓ, Dh)."""
        b, h, nc, ell, d = q.shape
        n = kb.shape[2]
        blocks = torch.arange(n, device=q.device)
        cur = torch.arange(c0, c0 + nc, device=q.device)
        # landmark scores and which blocks may be retrieved
        land = (q * scale) @ lk[:, :, None].transpose(-1, -2)  # (B, H, 1, Dh, n) -> (B, H, nc, ℓ, n)
        allowed = (blocks[None, :] < cur[:, None]) if self.causal else (blocks[None, :] != cur[:, None])  # (nc, n)
        allowed = allowed[None] & block_ok[:, None, :]  # (B, nc, n)
        land = land.masked_fill(~allowed[:, None, :, None, :], float("-inf"))
        top = torch.topk(land, kk, dim=-1)  # per query and head
        idx, land_sel = top.indices, top.values  # (B, H, nc, ℓ, k)
        w_land, w_own = self._grouped_weights(q, kb, keep, land_sel, c0, kk, scale)
        if n * ell <= DENSE_MAX_KEYS:
            return self._read_dense(q, kb, vb, keep, idx, w_land, scale) + w_own @ vb[:, :, c0 : c0 + nc]
        # gather the retrieved blocks' keys and values by advanced indexing (small index tensors):
        bi = torch.arange(b, device=q.device).view(b, 1, 1, 1, 1)
        hi = torch.arange(h, device=q.device).view(1, h, 1, 1, 1)
        k_sel = kb[bi, hi, idx].reshape(b, h, nc, ell, kk * ell, d)  # (B, H, nc, ℓ, k·ℓ, Dh)
        v_sel = vb[bi, hi, idx]  # (B, H, nc, ℓ, k, ℓ, Dh)
        tok_keep = keep[bi, idx]  # (B, H, nc, ℓ, k, ℓ)
        scores = ((q * scale)[..., None, :] @ k_sel.transpose(-1, -2)).reshape(b, h, nc, ell, kk, ell)
        p_in = safe_softmax(scores.masked_fill(~tok_keep, float("-inf")), dim=-1)  # inside each retrieved block
        per_block = (p_in[..., None, :] @ v_sel).squeeze(-2)  # (B, H, nc, ℓ, k, Dh)
        return (w_land[..., None] * per_block).sum(-2) + w_own @ vb[:, :, c0 : c0 + nc]

    def _grouped_weights(self, q, kb, keep, land_sel, c0, kk, scale):
        """The grouped softmax over [retrieved landmarks, own-block tokens]:
        w_land (B, H, nc, ℓ, k) and w_own (B, H, nc, ℓ, ℓ)."""
        nc, ell = q.shape[2], q.shape[3]
        own = (q * scale) @ kb[:, :, c0 : c0 + nc].transpose(-1, -2)  # (B, H, nc, ℓ, ℓ)
        own_ok = keep[:, c0 : c0 + nc, None, :]  # (B, nc, 1, ℓ)
        if self.causal:
            own_ok = own_ok & torch.ones(ell, ell, dtype=torch.bool, device=q.device).tril()
        own = own.masked_fill(~own_ok[:, None], float("-inf"))
        w = safe_softmax(torch.cat([land_sel, own], dim=-1), dim=-1)
        return w[..., :kk], w[..., kk:]

    @staticmethod
    def _read_dense(q, kb, vb, keep, idx, w_land, scale):
        """Σ_g w_g Σ_{j in g} p_g(j) v_j over the retrieved blocks g, with every key scored densely."""
        b, h, nc, ell, d = q.shape
        n = kb.shape[2]
        scores = ((q * scale).reshape(b, h, nc * ell, d) @ kb.reshape(b, h, n * ell, d).transpose(-1, -2))
        # a finite mask lets the fused softmax run: an all-padding block gets uniform p, but it is never
        # retrieved (w_g = 0), and a masked key's exp underflows to exactly 0 in a block with real keys
        scores = scores.reshape(b, h, nc, ell, n, ell).masked_fill(~keep[:, None, None, None], torch.finfo(q.dtype).min)
        p_in = torch.softmax(scores, dim=-1)  # p_g(j) for every block g, (B, H, nc, ℓ, n, ℓ)
        w_block = torch.zeros(b, h, nc, ell, n, dtype=q.dtype, device=q.device).scatter(-1, idx, w_land)  # 0 if not retrieved
        weights = (w_block[..., None] * p_in).reshape(b, h, nc * ell, n * ell)
        return (weights @ vb.reshape(b, h, n * ell, d)).reshape(b, h, nc, ell, d)

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        ell = min(self.block_size, len_q)
        n = -(-len_q // ell)
        kk = self._k_eff(n)
        read = n * ell if n * ell <= DENSE_MAX_KEYS else kk * ell  # keys scored and read per query
        per_query = 2 * n * d + 4 * read * d + 4 * ell * d  # landmark scores, retrieved blocks, own block
        return batch * self.num_heads * n * ell * per_query
