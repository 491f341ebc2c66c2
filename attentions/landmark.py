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
Both softmaxes (the grouped one and the one inside each block) are `cab.ops.masked_softmax`.
Reference: the grouped softmax as dense L×L weights, retrieval included (`reference_attend`).
Throughput (benchmarks/results/kernel_throughput.md): below 40% of the matmul rate at long lengths: the
retrieval is a top-k over blocks and the read of the retrieved blocks a gather (and a scatter backwards).
Decode (causal; the paper's inference): a KV cache and the landmark key (its keys' mean) of every complete
block; a token scores the n/ℓ landmarks, retrieves its top k blocks and reads them and its own block so far,
O((n/ℓ + k·ℓ + ℓ)·dim) per token. state_size = 2·dim·n + dim·⌊n/ℓ⌋.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cab import MultiHeadAttention, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import TokenCache, ceil_div, keep_mask, masked_softmax, pad_to_multiple

DENSE_MAX_KEYS = 1024  # up to this many keys, retrieved blocks are read densely (see the docstring)

_CROSS = "not ported: landmarks and the own-block softmax are defined on one sequence (the paper is a decoder LM)"


@register_attention(
    "landmark",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _CROSS, Pattern.CAUSAL_CROSS: _CROSS},
    family="routed",
    paper={"title": "Landmark Attention: Random-Access Infinite Context Length for Transformers",
           "authors": "Mohtashami & Jaggi", "venue": "NeurIPS", "year": 2023, "url": "https://arxiv.org/abs/2305.16300"},
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
        n = ceil_div(length, ell)
        keep = pad_to_multiple(keep_mask(key_padding_mask, b, length, q.device), ell, dim=-1)
        keep = keep.view(b, n, ell)  # (B, n, ℓ), False past the end
        qb, kb, vb = (pad_to_multiple(t, ell).view(b, h, n, ell, d) for t in (q, k, v))  # (B, H, n, ℓ, Dh)
        keepf = keep[:, None, :, :, None].to(q.dtype)
        # landmark key of a block: the mean of its real keys plus the learned per-head vector, (B, H, n, Dh)
        lk = (kb * keepf).sum(3) / keepf.sum(3).clamp(min=1.0) + self.landmark.to(q.dtype)[None, :, None]
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
        top = torch.topk(land, kk, dim=-1)  # per query and head; a -inf pick (too few allowed blocks) gets weight 0
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
        p_in = masked_softmax(scores, tok_keep)  # p_g(j): inside each retrieved block
        per_block = (p_in[..., None, :] @ v_sel).squeeze(-2)  # (B, H, nc, ℓ, k, Dh)
        return (w_land[..., None] * per_block).sum(-2) + w_own @ vb[:, :, c0 : c0 + nc]

    def _grouped_weights(self, q, kb, keep, land_sel, c0, kk, scale):
        """The grouped softmax over [retrieved landmarks, own-block tokens]:
        w_land (B, H, nc, ℓ, k) and w_own (B, H, nc, ℓ, ℓ)."""
        nc, ell = q.shape[2], q.shape[3]
        own = (q * scale) @ kb[:, :, c0 : c0 + nc].transpose(-1, -2)  # (B, H, nc, ℓ, ℓ)
        own_ok = keep[:, None, c0 : c0 + nc, None, :]  # (B, 1, nc, 1, ℓ)
        if self.causal:
            own_ok = own_ok & torch.ones(ell, ell, dtype=torch.bool, device=q.device).tril()
        own_ok = own_ok.expand_as(own)
        w = masked_softmax(torch.cat([land_sel, own], dim=-1), torch.cat([land_sel > float("-inf"), own_ok], dim=-1))
        return w[..., :kk], w[..., kk:]

    @staticmethod
    def _read_dense(q, kb, vb, keep, idx, w_land, scale):
        """Σ_g w_g Σ_{j in g} p_g(j) v_j over the retrieved blocks g, with every key scored densely."""
        b, h, nc, ell, d = q.shape
        n = kb.shape[2]
        scores = ((q * scale).reshape(b, h, nc * ell, d) @ kb.reshape(b, h, n * ell, d).transpose(-1, -2))
        scores = scores.view(b, h, nc, ell, n, ell).masked_fill_(~keep[:, None, None, None], torch.finfo(q.dtype).min)
        # masked_softmax without its zeroing of empty rows (a pass over the L×L weights): an all-padding block gets
        # uniform p, but it is never retrieved (w_g = 0); in a block with real keys a masked key's exp is exactly 0
        p_in = torch.softmax(scores, dim=-1)  # p_g(j) for every block g, (B, H, nc, ℓ, n, ℓ)
        w_block = torch.zeros(b, h, nc, ell, n, dtype=q.dtype, device=q.device).scatter(-1, idx, w_land)  # 0: not read
        weights = (w_block[..., None] * p_in).reshape(b, h, nc * ell, n * ell)
        return (weights @ vb.reshape(b, h, n * ell, d)).reshape(b, h, nc, ell, d)

    def reference_attend(self, q, k, v, key_padding_mask):
        """The grouped softmax as dense L×L weights: w_own on the own block, w_g·p_g(j) on retrieved blocks."""
        b, h, length, d = q.shape
        ell = min(self.block_size, length)
        blk = torch.arange(length, device=q.device) // ell  # block of each position, (L,)
        n = int(blk[-1]) + 1
        member = blk[None, :] == torch.arange(n, device=q.device)[:, None]  # (n, L)
        keep = keep_mask(key_padding_mask, b, length, q.device)  # (B, L)
        real = (member[None] & keep[:, None, :]).to(q.dtype)  # (B, n, L): the real tokens of each block
        lk = (real[:, None] @ k) / real.sum(-1).clamp(min=1.0)[:, None, :, None] + self.landmark[None, :, None]
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)  # (B, H, L, L)
        land = (q @ lk.transpose(-1, -2)) / math.sqrt(d)  # (B, H, L, n)
        same = blk[:, None] == blk[None, :]  # (L, L)
        own_ok = same & (torch.ones(length, length, dtype=torch.bool, device=q.device).tril() if self.causal else True)
        own_ok = own_ok & keep[:, None, None, :]  # (B, 1, L, L)
        g = torch.arange(n, device=q.device)
        land_ok = ((g[None, :] < blk[:, None]) if self.causal else (g[None, :] != blk[:, None]))  # (L, n)
        land_ok = land_ok & (real.sum(-1) > 0)[:, None, None, :]  # (B, 1, L, n): blocks with a real token
        # retrieval: the top k allowed blocks by landmark score, per query and head
        kk = min(self._k_eff(n), n)
        top = land.masked_fill(~land_ok, float("-inf")).topk(kk, dim=-1)
        retrieved = torch.zeros_like(land, dtype=torch.bool).scatter(-1, top.indices, top.values > float("-inf"))
        w = masked_softmax(torch.cat([land, s], dim=-1), torch.cat([retrieved, own_ok.expand_as(s)], dim=-1))
        w_land, w_own = w[..., :n], w[..., n:]  # (B, H, L, n), (B, H, L, L)
        # p_g(j) for j in block g: the softmax of s over the real tokens of g, for every query
        p = torch.zeros_like(s)
        for i in range(n):
            p[..., member[i]] = masked_softmax(s[..., member[i]], keep[:, None, None, member[i]])
        return (w_own + (w_land @ member.to(q.dtype)) * p) @ v

    def core_flops(self, batch: int, len_q: int, len_k: int) -> int:
        d = self.head_dim
        ell = min(self.block_size, len_q)
        n = ceil_div(len_q, ell)
        kk = self._k_eff(n)
        read = n * ell if n * ell <= DENSE_MAX_KEYS else kk * ell  # keys scored and read per query
        per_query = 2 * n * d + 4 * read * d + 4 * ell * d  # landmark scores, retrieved blocks, own block
        return batch * self.num_heads * n * ell * per_query

    def state_size(self, seq_len: int) -> int | None:
        if not self.causal:
            return None
        return 2 * self.dim * seq_len + self.dim * (seq_len // self.block_size)  # KV cache + landmark keys

    # -- decode: the KV cache and the complete blocks' key means (B, H, c, Dh) ----------------------
    def prefill(self, x):
        self.check_decode(x)
        b, length, _ = x.shape
        ell = self.block_size
        q, k, v = self.self_projections(x)
        out = self.out_proj(self.merge_heads(self.attend(q, k, v, None)))
        done = length // ell  # complete blocks: their landmark keys (less the learned vector, added when read)
        means = k[:, :, : done * ell].reshape(b, self.num_heads, done, ell, self.head_dim).sum(3) / ell
        return out, DecodeState(length, k=TokenCache(k), v=TokenCache(v), landmarks=TokenCache(means))

    def step(self, x_t, state):
        i, ell = state.position, self.block_size
        block, first = i // ell, (i // ell) * ell
        q, k, v = self.self_projections(x_t)  # (B, H, 1, Dh)
        keys, values = state["k"].extend(k), state["v"].extend(v)  # (B, H, i+1, Dh)
        q = q / math.sqrt(self.head_dim)
        own = q @ keys[:, :, first:].transpose(-1, -2)  # (B, H, 1, m): its own block so far
        kk = block if self.top_k is None else min(self.top_k, block)  # retrievable: the complete blocks before
        if kk:
            landmarks = state["landmarks"].view() + self.landmark.to(q.dtype)[None, :, None]  # (B, H, c, Dh)
            top = torch.topk(q @ landmarks.transpose(-1, -2), kk, dim=-1)  # (B, H, 1, k) per head
            w = torch.softmax(torch.cat([top.values, own], dim=-1), dim=-1)  # the grouped softmax
            b, h, _, d = keys.shape
            at = (top.indices[..., None] * ell + torch.arange(ell, device=x_t.device)).reshape(b, h, kk * ell, 1)
            k_sel = keys.gather(2, at.expand(-1, -1, -1, d)).view(b, h, kk, ell, d)  # the retrieved blocks
            v_sel = values.gather(2, at.expand(-1, -1, -1, d)).view(b, h, kk, ell, d)
            p_in = torch.softmax(q[:, :, None] @ k_sel.transpose(-1, -2), dim=-1)  # p_g(j): (B, H, k, 1, ℓ)
            retrieved = (w[..., :kk, None] * (p_in @ v_sel)[..., 0, :][:, :, None]).sum(-2)  # Σ_g w_g p_g·V_g
            out = retrieved + w[..., kk:] @ values[:, :, first:]
        else:
            out = torch.softmax(own, dim=-1) @ values[:, :, first:]
        if i - first == ell - 1:  # the block is complete: its landmark key
            state["landmarks"].extend(keys[:, :, first:].sum(2, keepdim=True) / ell)
        state.position += 1
        return self.out_proj(self.merge_heads(out)), state
