"""Private helpers shared by the part-1 attentions (not scanned by the registry: name starts with `_`).

Shapes: (B, H, L, D) per head; key_padding_mask (B, Lk) bool, True = padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor | None, dim: int = -1) -> torch.Tensor:
    """softmax over `dim` with `allowed` (bool, broadcastable) False entries excluded; a row with no
    allowed entry gives zeros instead of NaN (and a zero, finite gradient)."""
    if allowed is None:
        return torch.softmax(scores, dim=dim)
    filled = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * allowed


def masked_softmax_lse(scores: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, log-sum-exp) over the last dim; rows with nothing allowed give (0, -inf)."""
    filled = scores.masked_fill(~allowed, NEG_INF)
    m = filled.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(filled - m)  # exp(-inf) = 0 at masked entries
    s = e.sum(dim=-1, keepdim=True)
    p = e / s.clamp_min(torch.finfo(scores.dtype).tiny)
    lse = torch.where(s > 0, m + torch.log(s.clamp_min(torch.finfo(scores.dtype).tiny)), torch.full_like(s, NEG_INF))
    return p, lse.squeeze(-1)


def merge_softmax_parts(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine attention outputs computed over disjoint key sets into one softmax over their union.
    parts: [(out (B, H, L, Dv), lse (B, H, L))] -> (B, H, L, Dv)."""
    lses = torch.stack([lse for _, lse in parts], dim=0)  # (P, B, H, L)
    total = torch.logsumexp(lses, dim=0)
    total = torch.where(torch.isfinite(total), total, torch.zeros_like(total))
    out = 0
    for (o, lse) in parts:
        out = out + torch.exp(lse - total).unsqueeze(-1) * o
    return out


# ---------------------------------------------------------------------------------------------
# blocked sliding-window attention (local, Transformer-LS short-term, Reformer in sorted order)


def window_block_size(before: int, after: int) -> int:
    """Query block size of `window_attention`: 32 for small windows, 64 from a 64-wide window up."""
    return 64 if max(before, after) >= 64 else 32


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    before: int,
    after: int,
    *,
    block: int | None = None,
    exact: bool = True,
    key_valid: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    self_score: float | None = None,
    scale: float | None = None,
    need_lse: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax attention of position i over positions j with i-before <= j <= i+after, in blocks.

    Queries are cut into blocks of C; each block reads one span of C+before+after keys (an unfold
    of the padded keys, a view), so memory is O(L·(C+before+after)) and no L×L tensor exists.
    exact=False: every query of a block sees its whole span (Transformer-LS's segment window).

    q, k: (B, H, L, D)  v: (B, H, L, Dv)  key_valid: bool broadcastable to (B, H, L), True = may be
    attended; labels: (B, H, L) ints, only equal labels attend (Reformer's buckets); self_score:
    the score given to j == i (Reformer's "not itself unless alone").
    -> out (B, H, L, Dv), lse (B, H, L) (None unless need_lse); a query with no allowed key gets
    lse ≈ finfo.min and a meaningless output.   FLOPs: `window_attention_flops`.
    """
    b, h, length, d = q.shape
    dv = v.shape[-1]
    c = block or window_block_size(before, after)
    c = max(1, min(c, length))
    n = -(-length // c)
    lp = n * c
    span = c + before + after
    scale = d**-0.5 if scale is None else scale
    qb = (F.pad(q, (0, 0, 0, lp - length)) if lp > length else q).reshape(b, h, n, c, d) * scale
    kp = F.pad(k, (0, 0, before, lp - length + after))  # (B, H, Lp+before+after, D)
    vp = F.pad(v, (0, 0, before, lp - length + after))
    k_unf = kp.unfold(2, span, c)  # (B, H, n, D, span)
    v_unf = vp.unfold(2, span, c).transpose(-1, -2)  # (B, H, n, span, Dv)
    scores = qb @ k_unf  # (B, H, n, C, span)

    dev = q.device
    blk = torch.arange(n, device=dev)
    t = torch.arange(c, device=dev)
    s = torch.arange(span, device=dev)
    pos_q = blk[:, None] * c + t[None, :]  # (n, C)
    pos_k = blk[:, None] * c - before + s[None, :]  # (n, span)
    blocked = ((pos_k < 0) | (pos_k >= length))[:, None, :]  # (n, 1, span): outside the sequence
    if labels is not None and not exact:  # padded labels never match: the range check is implied
        blocked = torch.zeros(1, 1, 1, dtype=torch.bool, device=dev)
    if exact:
        rel = pos_k[:, None, :] - pos_q[:, :, None]  # (n, C, span)
        blocked = blocked | (rel < -before) | (rel > after)
    blocked = blocked.expand(n, c, span)[None, None] if blocked.dim() == 3 else blocked
    if key_valid is not None:
        kv = key_valid.expand(b, h, length) if key_valid.dim() == 3 else key_valid[:, None, :].expand(b, h, length)
        kv = F.pad(kv, (before, lp - length + after), value=False).unfold(2, span, c)  # (B, H, n, span)
        blocked = blocked | ~kv[:, :, :, None, :]
    if labels is not None:
        lq = F.pad(labels, (0, lp - length), value=-1).view(b, h, n, c)
        lk = F.pad(labels, (before, lp - length + after), value=-2).unfold(2, span, c)
        blocked = blocked | (lq[..., :, None] != lk[..., None, :])
    if self_score is not None:
        is_self = (pos_k[:, None, :] == pos_q[:, :, None])[None, None]
        scores.masked_fill_(is_self, self_score)  # scores is this function's own tensor
    # finite fill: a row with nothing allowed gets lse ≈ finfo.min (weight 0 when merged), no NaN
    scores.masked_fill_(blocked, torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=-1)
    lse = None
    if need_lse:  # lse = s_j − log p_j at the row's max: two reductions instead of a logsumexp pass
        lse = scores.amax(dim=-1) - torch.log(p.amax(dim=-1))
    out = p @ v_unf  # (B, H, n, C, Dv)
    out = out.reshape(b, h, lp, dv)[:, :, :length]
    return out, (lse.reshape(b, h, lp)[:, :, :length] if need_lse else None)


def window_attention_flops(length: int, d: int, dv: int, before: int, after: int, block: int | None = None) -> int:
    """Per (batch, head): QKᵀ over each block's span (2·C·span·D) and P·V (2·C·span·Dv)."""
    c = block or window_block_size(before, after)
    c = max(1, min(c, length))
    n = -(-length // c)
    span = c + before + after
    return n * (2 * c * span * d + 2 * c * span * dv)


# ---------------------------------------------------------------------------------------------
# chunked causal linear attention with a per-position scalar log-decay (Performer's stabiliser)


def gated_causal_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """out_i = Σ_{j<=i} exp(a_i - a_j) (q_i·k_j) v_j, a non-increasing in i, never an L×L tensor.

    Chunked like `cab.kernels.causal_linear_attention`, with GLA's data-dependent scalar decay:
    inside a chunk the masked C×C form weighted by exp(a_i - a_j) <= 1; across chunks a state
    S = Σ_j exp(a_end - a_j) k_j v_jᵀ (D×Dv per head), carried by an n-step loop S <- exp(a_end -
    a_prev_end)·S + chunk term. Every exponent is <= 0, so nothing overflows.

    q, k: (B, H, L, D)  v: (B, H, L, Dv)  a: (B, H, L) -> (B, H, L, Dv)
    FLOPs: `cab.kernels.causal_linear_flops` (same matrix products).
    """
    b, h, length, d = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, length)
    pad = (-length) % c
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        a = F.pad(a, (0, pad), mode="replicate")
    n = (length + pad) // c
    qc, kc, vc = q.view(b, h, n, c, d), k.view(b, h, n, c, d), v.view(b, h, n, c, dv)
    ac = a.view(b, h, n, c)
    pos = torch.arange(c, device=q.device)
    causal = pos[:, None] >= pos[None, :]
    diff = ac[..., :, None] - ac[..., None, :]  # a_i - a_j, (B, H, n, C, C)
    w = torch.exp(diff.masked_fill(~causal, NEG_INF))
    intra = ((qc @ kc.transpose(-1, -2)) * w) @ vc  # (B, H, n, C, Dv)
    a_end = ac[..., -1]  # (B, H, n)
    k_to_end = kc * torch.exp(a_end[..., None] - ac)[..., None]
    chunk_kv = k_to_end.transpose(-1, -2) @ vc  # (B, H, n, D, Dv)
    a_prev_end = torch.cat([a_end[..., :1], a_end[..., :-1]], dim=-1)  # state's reference before chunk
    carry = torch.exp(a_end - a_prev_end)  # (B, H, n), <= 1
    states = []
    state = torch.zeros(b, h, d, dv, dtype=q.dtype, device=q.device)
    for i in range(n):  # n = L/C steps on D×Dv matrices
        states.append(state)
        state = state * carry[:, :, i, None, None] + chunk_kv[:, :, i]
    state_before = torch.stack(states, dim=2)  # (B, H, n, D, Dv), in units of a_prev_end
    q_from_prev = qc * torch.exp(ac - a_prev_end[..., None])[..., None]
    inter = q_from_prev @ state_before
    return (intra + inter).reshape(b, h, n * c, dv)[:, :, :length]


# ---------------------------------------------------------------------------------------------
# segment means over the real (non-padded) positions: Nyströmformer and LARA landmarks


def segment_weights(
    length: int, num_segments: int, key_padding_mask: torch.Tensor | None, batch: int, device, dtype
) -> torch.Tensor:
    """(B, c, L) averaging weights: segment s covers positions [⌊s·n/c⌋, max(⌊(s+1)·n/c⌋, ⌊s·n/c⌋+1))
    of the real length n (last real index + 1), padded positions weigh 0. Independent of how much
    padding follows, so appended padding never moves a segment; with c >= n every segment is one
    position (duplicates when c > n)."""
    pos = torch.arange(length, device=device)
    if key_padding_mask is None:
        n_real = torch.full((batch,), length, device=device)
        valid = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        valid = ~key_padding_mask
        n_real = torch.where(valid, pos + 1, torch.zeros_like(pos)).amax(dim=1).clamp_min(1)
    seg = torch.arange(num_segments, device=device)
    start = (seg[None, :] * n_real[:, None]) // num_segments  # (B, c)
    end = torch.maximum(((seg[None, :] + 1) * n_real[:, None]) // num_segments, start + 1)
    inside = (pos[None, None, :] >= start[..., None]) & (pos[None, None, :] < end[..., None]) & valid[:, None, :]
    w = inside.to(dtype)
    return w / w.sum(-1, keepdim=True).clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# small deterministic hashing (sampling that does not depend on how much padding follows)


def hash_uniform_ints(rows: torch.Tensor, cols: torch.Tensor, seed: int) -> torch.Tensor:
    """A 31-bit pseudo-random integer for each (row, col) pair, a pure function of (row, col, seed):
    prefix-stable, unlike drawing a (rows, cols) tensor from a generator."""
    m = (1 << 31) - 1
    x = (rows[:, None].long() * 1103515245 + cols[None, :].long() * 12345 + (seed % m) * 2654435) % m
    for mult in (48271, 69621, 16807):
        x = (x ^ (x >> 13)) * mult % m
    return x


def orthogonal_gaussian(rows: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, dim) Gaussian orthogonal random matrix (Performer §4.2): blocks of dim orthonormal rows
    (QR of a Gaussian matrix), each row rescaled to the norm of an independent Gaussian vector."""
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        g = torch.randn(dim, dim, generator=generator)
        qmat, _ = torch.linalg.qr(g)
        blocks.append(qmat.T)
    w = torch.cat(blocks, dim=0)[:rows]
    norms = torch.randn(rows, dim, generator=generator).norm(dim=1)
    return w * norms[:, None]
