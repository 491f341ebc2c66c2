"""Ring attention: exact softmax attention over a sequence split across P ranks (Liu, Zaharia and
Abbeel, "Ring Attention with Blockwise Transformers for Near-Infinite Context", 2023; the blockwise
merge of FlashAttention and of Milakov & Gimelshein's online softmax).

Rank r holds the queries Q_r and the keys and values K_r, V_r of positions [r·L/P, (r+1)·L/P) (for a
cross pattern, its slice of the target and of the source). The keys and values travel round the ring;
each rank merges the partial softmaxes of its queries against every block by log-sum-exp:

    forward, on rank r                                   Q_r, K_r, V_r: (B, H, L/P, Dh); keep_r: (B, L/P)
        (O, lse) = nothing yet
        for s = 0 .. P-1:                                the block of rank src = (r - s) mod P is here
            start passing (K, V, keep) on to rank r+1    overlaps the compute below
            causal and src > r: skip                     above the diagonal
            (O_s, lse_s) = softmax_attention(Q_r, K_src, V_src, allowed)   `cab.ops`, allowed = keep_src
                                                         (∧ j <= i on the diagonal block src == r)
            (O, lse) = merge_softmax_parts((O, lse), (O_s, lse_s))        O = Σ_s e^(lse_s - lse) O_s
            wait for the next block
    backward: the blocks go round once more, each with its gradients dK, dV accumulating as it travels
    (one extra hop brings them home). For each block the partial is recomputed and differentiated with
        dO_s = w_s dO,    dlse_s = w_s · rowsum(dO ⊙ (O_s - O)),    w_s = exp(lse_s - lse)
    (out = Σ_s w_s O_s, and ∂w_t/∂lse_s = w_t(δ_ts - w_s)), so nothing of size L/P × L/P is kept
    between the passes: the memory of forward+backward is that of one block, not of P.

Cost per rank: FLOPs 4·B·(L/P)·(L/P)·dim per block computed (P blocks; causal: r + 1 of them, the
diagonal one half-masked). Bytes sent per rank (forward): 2·(P-1)·B·(L/P)·dim·e for K and V, plus the
(P-1)·B·L/P bytes of the padding mask; backward: (P-1) more hops of K, V and P hops of dK, dV.
Peak memory per rank: one block's scores, their masked copy and probabilities, about 4·B·H·(L/P)·C·e
with C = `query_chunk` (default: the whole block, L/P), plus O(B·(L/P)·dim) for Q, K, V, O and the
blocks in flight.

Causal load balance: with contiguous slices rank r computes r full blocks and one half block, so the
last rank does P - 1/2 blocks of work while the mean is P/2: the step takes (2P-1)/P times the
balanced time (1.5× at P = 2, 1.75× at P = 4, → 2×). The striped / zig-zag layouts (Brandon et al.
2023; zhuzilin/ring-flash-attention) give every rank the same work by giving rank r the chunks r and
2P-1-r of 2P; they are not implemented here, because the layer contract is contiguous slices.
"""

from __future__ import annotations

import torch
from torch.autograd import Function

from cab.ops import merge_softmax_parts, softmax_attention

from .comm import start_shift, world


def _allowed(keep: torch.Tensor | None, diagonal: bool, rows: slice, len_q: int, len_k: int, device):
    """The `allowed` mask of queries `rows` against one block: its real keys, and j <= i on the diagonal
    block (positions aligned: query i and key i of the block are the same position). -> (B|1, 1, C|1, Lk)."""
    allowed = None if keep is None else keep[:, None, None, :]
    if diagonal:
        i = torch.arange(rows.start, min(rows.stop, len_q), device=device)[:, None]
        tri = (torch.arange(len_k, device=device)[None, :] <= i)[None, None]
        allowed = tri if allowed is None else allowed & tri
    return allowed


def _chunks(length: int, chunk: int | None):
    step = length if not chunk else max(1, chunk)
    return [slice(lo, min(lo + step, length)) for lo in range(0, max(length, 1), step)]


def _weights(lse_part: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """w_s = exp(lse_s - lse): the share of block s in the merged softmax (0 for a row it left empty)."""
    return torch.where(torch.isfinite(lse_part), torch.exp(lse_part - lse), torch.zeros_like(lse_part))


class _RingAttention(Function):
    @staticmethod
    def forward(ctx, q, k, v, keep, causal, scale, query_chunk, group):
        rank, size = world(group)
        b, h, len_q, _ = q.shape
        out = q.new_zeros(b, h, len_q, v.shape[-1])
        lse = q.new_full((b, h, len_q), float("-inf"))
        block = [k, v] + ([keep.to(torch.uint8)] if keep is not None else [])
        for step in range(size):
            src = (rank - step) % size
            pending = start_shift(block, 1, group) if step + 1 < size else None
            if not (causal and src > rank):
                kb, vb = block[0], block[1]
                keep_b = block[2].bool() if keep is not None else None
                for rows in _chunks(len_q, query_chunk):
                    allowed = _allowed(keep_b, causal and src == rank, rows, len_q, kb.shape[2], q.device)
                    part = softmax_attention(q[:, :, rows], kb, vb, allowed, scale, return_lse=True)
                    out[:, :, rows], lse[:, :, rows] = merge_softmax_parts(
                        [(out[:, :, rows], lse[:, :, rows]), part], return_lse=True)
            if pending is not None:
                block = pending.wait()
        ctx.save_for_backward(q, k, v, keep, out, lse)
        ctx.causal, ctx.scale, ctx.query_chunk, ctx.group = causal, scale, query_chunk, group
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, keep, out, lse = ctx.saved_tensors
        rank, size = world(ctx.group)
        len_q = q.shape[2]
        dq = torch.zeros_like(q)
        carried = [k, v] + ([keep.to(torch.uint8)] if keep is not None else [])
        grads = [torch.zeros_like(k), torch.zeros_like(v)]  # dK, dV of the block held: they travel with it
        for step in range(size):
            src = (rank - step) % size
            pending = start_shift(carried, 1, ctx.group) if step + 1 < size else None
            if not (ctx.causal and src > rank):
                kb, vb = carried[0], carried[1]
                keep_b = carried[2].bool() if keep is not None else None
                for rows in _chunks(len_q, ctx.query_chunk):
                    allowed = _allowed(keep_b, ctx.causal and src == rank, rows, len_q, kb.shape[2], q.device)
                    with torch.enable_grad():
                        qc, kc, vc = (t.detach().requires_grad_(True) for t in (q[:, :, rows], kb, vb))
                        o_s, lse_s = softmax_attention(qc, kc, vc, allowed, ctx.scale, return_lse=True)
                        w = _weights(lse_s.detach(), lse[:, :, rows])  # (B, H, C)
                        d_o = dout[:, :, rows]
                        d_lse = w * (d_o * (o_s.detach() - out[:, :, rows])).sum(-1)
                        gq, gk, gv = torch.autograd.grad((o_s, lse_s), (qc, kc, vc), (w[..., None] * d_o, d_lse))
                    dq[:, :, rows] += gq
                    grads[0] += gk
                    grads[1] += gv
            # the block's gradients move on with it; after the last step one more hop brings them home
            grads = start_shift(grads, 1, ctx.group).wait()
            if pending is not None:
                carried = pending.wait()
        return dq, grads[0], grads[1], None, None, None, None, None


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    query_chunk: int | None = None,
    group=None,
) -> torch.Tensor:
    """Exact softmax attention of this rank's queries against the keys of every rank (see the module
    docstring). q: (B, H, Lq/P, Dh)  k, v: (B, H, Lk/P, Dh)  key_padding_mask: (B, Lk/P) True = padding,
    this rank's slice. causal: self attention with aligned slices (Lq = Lk), key j <= query i.
    scale defaults to Dh^-1/2. query_chunk: queries per block product (None: the whole block).
    -> (B, H, Lq/P, Dh); a query with no real key allowed gets 0 (`masked_softmax`'s convention).
    Every rank of `group` must call it with the same shapes."""
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError(f"causal ring attention needs aligned slices; got {q.shape[2]} queries, {k.shape[2]} keys")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    keep = None if key_padding_mask is None else ~key_padding_mask
    return _RingAttention.apply(q, k, v, keep, causal, scale, query_chunk, group)
