"""Small tensor kernels shared by several mechanisms (public: attentions may import these).

Shapes: (B, H, L, D) for features, (B, H, L, Dv) for values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk_size: int = 64, decay: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ_{j<=i} λ^{i-j} (q_i·k_j) v_j for every i, without forming an L×L matrix.

    Chunked form (Lightning Attention-2, Qin et al. 2024; GLA's "chunkwise parallel" form): inside a
    chunk of C positions the masked quadratic form; across chunks a carried state S = Σ k_j v_jᵀ
    (D×Dv per head), built for all chunks at once by a prefix sum. Memory O(L·C + (L/C)·D·Dv);
    time O(L·C·D + L·D·Dv).

    q, k: (B, H, L, D)   v: (B, H, L, Dv)   decay: (H,) in (0, 1] or None (no decay)
    -> (B, H, L, Dv); FLOPs in `causal_linear_flops`.
    """
    b, h, length, d = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, length)
    pad = (-length) % c
    if pad:  # zero rows add nothing to the state and their outputs are cut off below
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = (length + pad) // c
    qc = q.reshape(b, h, n, c, d)
    kc = k.reshape(b, h, n, c, d)
    vc = v.reshape(b, h, n, c, dv)

    pos = torch.arange(c, device=q.device)
    if decay is None:
        intra_weight = (pos[:, None] >= pos[None, :]).to(q.dtype)  # (C, C) causal mask
        scores = (qc @ kc.transpose(-1, -2)) * intra_weight  # (B, H, n, C, C)
        intra = scores @ vc  # (B, H, n, C, Dv)
        chunk_kv = kc.transpose(-1, -2) @ vc  # (B, H, n, D, Dv)
        state = torch.cumsum(chunk_kv, dim=2) - chunk_kv  # exclusive prefix: state before chunk
        inter = qc @ state  # (B, H, n, C, Dv)
        out = intra + inter
    else:
        lam = decay.to(q.dtype).view(1, h, 1, 1, 1)
        log_lam = torch.log(lam)
        diff = (pos[:, None] - pos[None, :]).to(q.dtype)  # i - j
        intra_weight = torch.where(diff >= 0, torch.exp(log_lam * diff.clamp(min=0)), torch.zeros((), dtype=q.dtype))
        intra = ((qc @ kc.transpose(-1, -2)) * intra_weight) @ vc
        # key j of a chunk reaches the chunk's end decayed by λ^{C-1-j}; query i reads the state at
        # the chunk's start decayed by λ^{i+1}.
        k_to_end = torch.exp(log_lam * (c - 1 - pos).to(q.dtype)).view(1, h, 1, c, 1)
        q_from_start = torch.exp(log_lam * (pos + 1).to(q.dtype)).view(1, h, 1, c, 1)
        chunk_kv = (kc * k_to_end).transpose(-1, -2) @ vc  # (B, H, n, D, Dv)
        chunk_decay = torch.exp(log_lam.view(1, h, 1, 1) * c)  # λ^C per chunk, (1, H, 1, 1)
        states = []
        state = torch.zeros(b, h, d, dv, dtype=q.dtype, device=q.device)
        for i in range(n):  # n = L / C steps of a D×Dv recurrence: cheap next to the chunk products
            states.append(state)
            state = state * chunk_decay + chunk_kv[:, :, i]
        inter = (qc * q_from_start) @ torch.stack(states, dim=2)
        out = intra + inter
    return out.reshape(b, h, n * c, dv)[:, :, :length]


def causal_linear_flops(batch: int, heads: int, length: int, d: int, dv: int, chunk_size: int) -> int:
    """FLOPs of `causal_linear_attention`: per chunk of C, QKᵀ (2C²D) and ·V (2C²Dv) inside it,
    the chunk's KᵀV (2C·D·Dv) and the read of the carried state Q·S (2C·D·Dv)."""
    c = min(chunk_size, length)
    n = -(-length // c)
    per_chunk = 2 * c * c * d + 2 * c * c * dv + 4 * c * d * dv
    return batch * heads * n * per_chunk


def quadratic_causal_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference: the masked quadratic form of `causal_linear_attention` (materialises L×L)."""
    length = q.shape[-2]
    pos = torch.arange(length, device=q.device)
    diff = (pos[:, None] - pos[None, :]).to(q.dtype)
    if decay is None:
        weight = (diff >= 0).to(q.dtype)
    else:
        lam = decay.to(q.dtype).view(1, -1, 1, 1)
        weight = torch.where(diff >= 0, lam ** diff.clamp(min=0), torch.zeros((), dtype=q.dtype))
    return ((q @ k.transpose(-1, -2)) * weight) @ v
