"""Linear attention sequence parallelism (LASP: Sun, Qin, Sun, Li and Zhong, "Linear Attention
Sequence Parallelism", 2024): each rank reduces its slice of keys and values to a state of fixed size,
and the states, not the keys, cross the ranks.

The recurrence (cab/ops/recurrence.py) with state S (F × Dv' per head, Dv' = Dv + 1 with the
normaliser's ones column) and log decay g <= 0:

    S_t = exp(g_t) S_{t-1} + φ(k_t) [v_t 1]ᵀ         out_t = φ(q_t)ᵀ S_t  (normalised: num / (den + eps))

Rank r holds positions [r·L/P, (r+1)·L/P). Then, with F_r its own keys' contribution and D_r the
decay across its slice,

    F_r = Σ_{j in r} exp(Σ_{u in r, u > j} g_u) φ(k_j) [v_j 1]ᵀ          one product, (B, H, F, Dv')
    log D_r = Σ_{u in r} g_u                                             (decay: None, per head, per position)
    causal:    S_before(r) = Σ_{p < r} exp(Σ_{p < u < r} log D_u) F_p     the prefix, from all_gather(F, log D)
               out_r = linear_attention(φ(Q_r), φ(K_r), V_r, causal=True, initial_state=S_before(r))
    noncausal: S = all_reduce_sum(F_r)  (no decay)                        every rank, the total
               out_r = φ(Q_r) S, normalised

so the outputs equal the single-process layer's up to rounding: the op's recurrence runs the local
slice from the exact state before it. LASP passes the states point to point round the ring (P - 1
sequential steps, |S| bytes each); here one all-gather does it (one step, (P - 1)·|S| bytes per
rank): with states of a few hundred KB, latency matters more than bytes. The prefix is a weighted sum
over *all* gathered states (weight 0 for p >= r), so every rank builds the same autograd graph and
enters the backward collectives (a rank that skipped them would leave the others waiting).

Cost per rank: the mechanism's own linear cost on L/P positions, plus F_r (2·(L/P)·F·Dv' per head).
Bytes sent per rank: causal (P-1)·|S|·e (+ the decays), noncausal 2·(P-1)/P·|S|·e, |S| = B·H·F·Dv',
forward; the same backward. Peak memory per rank: O(B·H·(L/P)·(F + Dv)), nothing quadratic.

Per-mechanism knowledge (feature maps, decay, stabilisers, Based's sliding window) is in
cab/distributed/adapters.py; this module is the strategy.
"""

from __future__ import annotations

import torch

from cab.ops import linear_attention, zero_padding

from .comm import all_gather, all_reduce_sum, world


def local_state(phi_k: torch.Tensor, v: torch.Tensor, log_decay) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(F_r, log D_r) of this rank's slice. phi_k: (B, H, L, F) with padding already zeroed; v: (B, H, L, Dv');
    log_decay: None, (H,) per head or (B, H, L) per position. -> F_r (B, H, F, Dv'), log D_r: None, (H,) or (B, H)."""
    length = phi_k.shape[2]
    if log_decay is None:
        return phi_k.transpose(-1, -2) @ v, None
    if log_decay.dim() == 1:  # per head: position j decays (L-1-j) times before the slice ends
        after = torch.arange(length - 1, -1, -1, dtype=phi_k.dtype, device=phi_k.device)  # (L,)
        weight = torch.exp(log_decay.to(phi_k.dtype)[:, None] * after)  # (H, L)
        return (phi_k * weight[None, :, :, None]).transpose(-1, -2) @ v, log_decay * length
    if log_decay.dim() == 3:  # per position: Σ_{u > j} g_u as a suffix sum (no total - prefix: no cancellation)
        g = log_decay.expand(phi_k.shape[0], phi_k.shape[1], length)
        suffix = torch.flip(torch.cumsum(torch.flip(g, [2]), 2), [2])  # Σ_{u >= j} g_u
        after = torch.cat([suffix[..., 1:], torch.zeros_like(suffix[..., :1])], dim=2)  # Σ_{u > j} g_u
        return (phi_k * torch.exp(after)[..., None]).transpose(-1, -2) @ v, suffix[..., 0]
    raise ValueError(f"LASP supports no decay, per-head (H,) or per-position (B, H, L) decay; "
                     f"got {tuple(log_decay.shape)}")


def state_before(states: torch.Tensor, log_decays: torch.Tensor | None, rank: int) -> torch.Tensor:
    """S_before(rank) from every rank's (F_p, log D_p): states (P, B, H, F, Dv'), log_decays (P, ...) or None.
    A weighted sum over all P states (0 for p >= rank), so the graph is the same on every rank."""
    total = torch.zeros_like(states[0])
    for p in range(states.shape[0]):
        take = 1.0 if p < rank else 0.0
        if log_decays is None:
            total = total + take * states[p]
        else:
            decay = torch.exp(log_decays[p])  # (H,) or (B, H): across rank p's slice
            decay = decay[None, :, None, None] if decay.dim() == 1 else decay[:, :, None, None]
            total = take * (decay * total + states[p]) + (1.0 - take) * total
    return total


def lasp_linear_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    normalize: bool = True,
    eps: float = 1e-6,
    log_decay: torch.Tensor | None = None,
    chunk_size: int = 64,
    group=None,
) -> torch.Tensor:
    """`cab.ops.linear_attention` over a sequence split across the ranks (see the module docstring).

    phi_q: (B, H, Lq/P, F)  phi_k: (B, H, Lk/P, F)  v: (B, H, Lk/P, Dv)  key_padding_mask: (B, Lk/P), this
    rank's slices. causal: self attention (Lq = Lk), with log_decay None, (H,) or (B, H, L/P) (this rank's
    positions). -> (B, H, Lq/P, Dv)."""
    rank, _ = world(group)
    phi_k = zero_padding(phi_k, key_padding_mask)
    v1 = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1) if normalize else v  # (.., Dv'): Σ φ(k) rides along
    if not causal:
        if log_decay is not None:
            raise ValueError("decay exists only for causal linear attention")
        total = all_reduce_sum(phi_k.transpose(-1, -2) @ v1, group)  # (B, H, F, Dv'): every rank's keys
        num = phi_q @ total
        return num[..., :-1] / (num[..., -1:] + eps) if normalize else num  # linear.py's one policy
    state, log_total = local_state(phi_k, v1, log_decay)
    states = all_gather(state, group)  # (P, B, H, F, Dv')
    log_totals = None if log_total is None else all_gather(log_total, group)
    before = state_before(states, log_totals, rank)
    return linear_attention(phi_q, phi_k, v, causal=True, normalize=normalize, eps=eps, log_decay=log_decay,
                            chunk_size=chunk_size, initial_state=before)
