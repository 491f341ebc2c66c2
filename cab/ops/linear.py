"""Linear attention on feature maps: normalised (Katharopoulos et al., 2020) or not, causal or not.

    normalised:    out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)
    un-normalised: out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ                        (Lightning, flowformer)
    j over all real keys (noncausal) or real j <= i (causal, optionally decayed as in `causal_recurrence`).

Denominator policy (the one for the zoo): out = num / (den + eps), eps = 1e-6 by default. With nonnegative
features den >= 0, so the division is always finite and a query that sees no real key (den = num = 0)
gets 0. The shift is eps/den relative, so eps must be small against the features' scale: mechanisms
whose features are rescaled by a stabiliser (Performer: den can be ≪ 1 legitimately) pass
eps = torch.finfo(dtype).tiny, which is exact wherever den is a normal number.
The normaliser is computed with the numerator by appending a ones column to v: one product, one state.
Padding: padded keys are zeroed in φ(k) (`zero_padding`), so they add nothing to either sum.
Causal: `causal_recurrence` runs over segments of SEGMENT positions (whole chunks), the state carried
across, so the chunk intermediates stay cache-sized whatever the length (same chunks, same FLOPs).

Reference: `linear_attention_reference`, the quadratic masked form (materialises Lq×Lk).
"""

from __future__ import annotations

import torch

from .masking import zero_padding
from .recurrence import causal_recurrence, causal_recurrence_flops, causal_recurrence_step, decay_kind

SEGMENT = 512  # causal: positions per call of `causal_recurrence` (a multiple of the chunk), the state carried


def linear_attention(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    normalize: bool = True,
    eps: float = 1e-6,
    log_decay: torch.Tensor | None = None,
    chunk_size: int = 64,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Linear attention of feature-mapped queries and keys (see the module docstring).

    phi_q: (B, H, Lq, F)  phi_k: (B, H, Lk, F)  v: (B, H, Lk, Dv)  key_padding_mask: (B, Lk) True = padding.
    causal: Lq == Lk, output i sees keys j <= i, through `causal_recurrence` (chunked, no L×L), optionally
    with log_decay (any of its kinds; g at padded positions is used as given) and a carried state
    initial_state / final state (B, H, F, Dv+1 if normalize else Dv; the last column is Σ φ(k), the
    normaliser's state). Noncausal: Σ_j φ(k_j)[v_j 1]ᵀ once, then one product per query.
    -> out (B, H, Lq, Dv) [, final state]. FLOPs: `linear_attention_flops`.
    """
    if not causal and (log_decay is not None or initial_state is not None or return_final_state):
        raise ValueError("log_decay and the recurrent state exist only for causal linear attention")
    phi_k = zero_padding(phi_k, key_padding_mask)
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, Lk, Dv+1): last column sums φ(k)
    if causal:
        num, state = _causal_segments(phi_q, phi_k, v, log_decay, initial_state, chunk_size)
    else:
        num = phi_q @ (phi_k.transpose(-1, -2) @ v)  # (B, H, Lq, Dv[+1])
        state = None
    if normalize:
        num = num[..., :-1] / (num[..., -1:] + eps)
    return (num, state) if return_final_state else num


def linear_attention_step(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    log_decay: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One generated position of causal `linear_attention` (its decode form), from the state of the positions
    before it (the final state of `linear_attention(..., causal=True, return_final_state=True)`):

        S' = diag(exp(g)) S + φ(k) [v 1]ᵀ          S: (B, H, F, Dv+1 if normalize else Dv)
        out = φ(q)ᵀ S'[:, :Dv] / (φ(q)ᵀ S'[:, Dv] + eps)     (normalize; else φ(q)ᵀ S')

    phi_q, phi_k: (B, H, F)  v: (B, H, Dv)  log_decay: as `causal_recurrence_step`. -> (out (B, H, Dv), S'),
    S updated in place. O(H·F·Dv) per token, whatever the context length."""
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # (B, H, Dv+1): the normaliser's column
    num, state = causal_recurrence_step(phi_q, phi_k, v, state, log_decay)
    if normalize:
        num = num[..., :-1] / (num[..., -1:] + eps)
    return num, state


def _causal_segments(phi_q, phi_k, v, log_decay, state, chunk_size):
    """`causal_recurrence` over segments of whole chunks (SEGMENT positions), the state carried from one to
    the next: the same chunks and the same result, but every intermediate of a segment stays in cache
    (about 1.2-1.4× faster at 16,384 positions than one call over the whole length). -> (out, final state)."""
    length = phi_q.shape[2]
    seg = chunk_size * max(1, SEGMENT // chunk_size)  # whole chunks: the chunking (and the FLOPs) do not change
    outs = []
    for lo in range(0, max(length, 1), seg):
        piece = slice(lo, lo + seg)
        q, k, vs = phi_q[:, :, piece], phi_k[:, :, piece], v[:, :, piece]
        out, state = causal_recurrence(q, k, vs, _decay_piece(log_decay, piece), state, chunk_size, True)
        outs.append(out)
    return (torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]), state


def _decay_piece(log_decay, piece: slice):
    """The log decay of the positions in `piece`: per-head (H,) decay as it is, per-position ones cut on dim 2."""
    if isinstance(log_decay, tuple):  # (Δ (B, H, L), A (H, Dk))
        return log_decay[0][:, :, piece], log_decay[1]
    if log_decay is None or log_decay.dim() < 3:
        return log_decay
    return log_decay[:, :, piece]


def linear_attention_flops(
    batch: int, heads: int, len_q: int, len_k: int, f: int, dv: int, *, causal: bool = False, normalize: bool = True,
    chunk_size: int = 64, decay: str = "none",
) -> int:
    """Matrix-product FLOPs of `linear_attention` with F features (the division is elementwise).

    Dv' = Dv + 1 when normalised (the ones column). Noncausal per (batch, head): φ(K)ᵀ[V 1] 2·Lk·F·Dv' and
    φ(Q)·that 2·Lq·F·Dv'. Causal: `causal_recurrence_flops(batch, heads, L, F, Dv', chunk_size, decay)`.
    """
    dv1 = dv + 1 if normalize else dv
    if causal:
        return causal_recurrence_flops(batch, heads, len_q, f, dv1, chunk_size, decay)
    return batch * heads * 2 * f * dv1 * (len_k + len_q)


def linear_attention_reference(
    phi_q: torch.Tensor,
    phi_k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    normalize: bool = True,
    eps: float = 1e-6,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """The quadratic masked form of `linear_attention`: A_ij = Σ_d φ(q_i)_d φ(k_j)_d exp(G_id - G_jd) for
    allowed (i, j), G = cumsum of the log decay over the whole sequence, out = A[V 1] normalised.
    Materialises (B, H, Lq, Lk[, F]): tests only."""
    lq, lk = phi_q.shape[-2], phi_k.shape[-2]
    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    kind = decay_kind(log_decay, (v.shape[0], v.shape[1], lq, phi_q.shape[-1])) if causal else "none"
    allowed = torch.ones(lq, lk, dtype=torch.bool, device=phi_q.device)
    if causal:
        allowed = allowed.tril()
    if kind == "none":
        cum = torch.zeros((), dtype=phi_q.dtype, device=phi_q.device)
        a = (phi_q @ phi_k.transpose(-1, -2)).masked_fill(~allowed, 0.0)  # (B, H, Lq, Lk)
    else:
        pos = torch.arange(1, lq + 1, dtype=phi_q.dtype, device=phi_q.device)[:, None]
        if kind == "head":  # G, the decay summed over the whole sequence: (.., L, 1 | Dk)
            cum = log_decay.view(1, -1, 1, 1) * pos
        elif kind == "position":
            cum = torch.cumsum(log_decay, dim=2)[..., None]
        else:
            cum = torch.cumsum(log_decay, dim=2)
        diff = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(~allowed[..., None], float("-inf"))
        a = (phi_q[..., :, None, :] * torch.exp(diff) * phi_k[..., None, :, :]).sum(-1)  # (B, H, Lq, Lk)
    if key_padding_mask is not None:
        a = a.masked_fill(key_padding_mask[:, None, None, :], 0.0)
    num = a @ v
    if initial_state is not None:
        num = num + (phi_q * torch.exp(cum)) @ initial_state
    if normalize:
        num = num[..., :-1] / (num[..., -1:] + eps)
    return num
