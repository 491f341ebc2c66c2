"""The causal linear recurrence with decay, chunked, with its state in and out.

    S_t = diag(exp(g_t)) · S_{t-1} + k_t v_tᵀ        S: (Dk, Dv) per (batch, head), S_{-1} = initial state
    o_t = S_tᵀ q_t                                   (inclusive: o_t sees k_t, v_t)

so o_t = Σ_{j<=t} (q_t ⊙ exp(G_t - G_j)) · k_j  v_j + (q_t ⊙ exp(G_t)) · S_{-1}, G_t = Σ_{s<=t} g_s.
The log decay g <= 0 (not checked) is chosen by the shape of `log_decay`:

    None          no decay: linear attention (Katharopoulos), flowformer's aggregation
    (H,)          one constant per head, g_h = log λ_h: Lightning Attention / RetNet
    (B, H, L)     a data-dependent scalar per position: GLA's scalar gate, Mamba-2; Performer's running-max
                  stabiliser gives a cumulative a_t (out_t = Σ exp(a_t - a_j)...), whose per-step form is
                  g = `log_decay_from_cumulative(a)`
    (B, H, L, Dk) a data-dependent decay per key channel: GLA's diagonal gate; Mamba-1's selective scan with
                  heads = the E channels, Dk = N states, Dv = 1:
                      q = C_t, k = B_t (both (B, 1, L, N), shared by the E heads), v = Δ_t x_t (B, E, L, 1),
                      log_decay = Δ_t A (B, E, L, N)  ->  y_t = out[..., 0] (+ D x_t); h_t = S[..., 0]
    (Δ, A)        the same per-channel decay by its factors, Δ (B, H, L) and A (H, Dk): g_t = Δ_t A
                  (Mamba-1: log_decay = (Δ_t, A) with Δ as (B, E, L)), never materialised with Dv = 1

Fast form (`causal_recurrence`), the chunkwise-parallel form of Lightning Attention-2 / GLA: positions are
cut into chunks of C; inside a chunk the masked C×C products weighted by exp(G_i - G_j); across chunks the
state carried by an L/C-step loop (decay None: a prefix sum, no loop). Every exponent is chunk-relative and
<= 0 (G is summed from the chunk's start, and only later-minus-earlier differences are exponentiated), so
nothing overflows whatever the length or the size of g. A last partial chunk is run as its own piece from
the carried state (no padding steps), so the final state is exact and runs can be resumed: running
[0:L1] and then [L1:L] from the first run's final state equals one run over [0:L].
Per-channel decay cannot use one C×C score matrix; it runs a second, inner level: for 1 < Dv < 16 a step
loop over the C positions of all chunks at once (C + L/C sequential steps), otherwise sub-chunks of 16 whose
intra products weigh each (i, j, channel) pair explicitly.
Per-channel decay with Dv = 1 (Mamba-1) is not chunked at all (`_ChannelScan`, below): the state is a vector
per head, so a C×C form would weigh (C, C, Dk) numbers per chunk, C times the recurrence's own work. It runs
the recurrence itself, one fused op per position over time-major buffers, exact for any g (no exponent is
ever positive), with a hand-written backward (the adjoint recurrence). Its decay may also be given by its
factors, log_decay = (Δ (B, H, L), A (H, Dk)) for g_t = Δ_t A, which is never materialised.

Reference form: `causal_recurrence_reference`, the step-by-step loop. FLOPs: `causal_recurrence_flops`.
"""

from __future__ import annotations

import itertools
import math

import torch

NEG_INF = float("-inf")
SUB_CHUNK = 16  # per-channel decay: inner chunk of the pairwise form, and the Dv below which steps are looped

DECAY_KINDS = ("none", "head", "position", "channel")


def decay_kind(log_decay: torch.Tensor | None, shape: tuple[int, int, int, int]) -> str:
    """Which decay `log_decay` is for a recurrence of shape (B, H, L, Dk): "none", "head" (H,), "position"
    (B, H, L) or "channel" (B, H, L, Dk) or (Δ (B, H, L), A (H, Dk)) (size-1 B or H broadcast). Raises
    ValueError on any other shape."""
    if log_decay is None:
        return "none"
    b, h, length, dk = shape
    if isinstance(log_decay, tuple):  # (Δ, A): g_t = Δ_t A per channel
        delta, rates = log_decay
        if delta.dim() == 3 and delta.shape[2] == length and all(s in (1, f) for s, f in zip(delta.shape, (b, h))) \
                and tuple(rates.shape) == (h, dk):
            return "channel"
        raise ValueError(f"log_decay (Δ, A) of shapes {tuple(delta.shape)}, {tuple(rates.shape)} do not fit "
                         f"(B, H, L) and (H, Dk) for (B, H, L, Dk) = {(b, h, length, dk)}")
    shape = tuple(log_decay.shape)
    if shape == (h,):
        return "head"
    for kind, full in (("position", (b, h, length)), ("channel", (b, h, length, dk))):
        if len(shape) == len(full) and shape[2] == length and all(s in (1, f) for s, f in zip(shape, full)):
            return kind
    raise ValueError(f"log_decay of shape {shape} fits none of (H,), (B, H, L), (B, H, L, Dk) for (B, H, L, Dk) = "
                     f"{tuple((b, h, length, dk))}")


def log_decay_from_cumulative(a: torch.Tensor) -> torch.Tensor:
    """Per-step log decay g from a cumulative one a, along dim 2 ((B, H, L) or (B, H, L, Dk)).

    g_t = a_t - a_{t-1}, g_0 = 0, so exp(G_t - G_j) = exp(a_t - a_j): out_t = Σ_{j<=t} exp(a_t - a_j) q_t·k_j v_j
    (Performer's stabiliser). a must be non-increasing for g <= 0. An initial state is read with exp(a_t - a_0).
    """
    return a - torch.cat([a.narrow(2, 0, 1), a.narrow(2, 0, a.shape[2] - 1)], dim=2)


def causal_recurrence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """o_t = S_tᵀ q_t with S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ (see the module docstring), chunked.

    q, k: (B, H|1, L, Dk)  v: (B, H, L, Dv)  log_decay g <= 0: None, (H,), (B, H, L), (B, H, L, Dk) or the pair
    (Δ (B, H, L), A (H, Dk)) (size-1 batch/head dims broadcast for the last three)  initial_state: (B, H, Dk, Dv)
    or None (zeros).
    q and k may have one head shared by all H heads of v (Mamba: B_t, C_t are shared by the E channels):
    they are broadcast, never copied H times.
    -> out (B, H, L, Dv) [, final state (B, H, Dk, Dv)]. Never an L×L tensor: memory O(L·C + (L/C)·Dk·Dv).
    No masking: a padded position is dropped by zeroing its k (or v) and, for data-dependent decay, g = 0
    there if it must not decay the state either. FLOPs: `causal_recurrence_flops`.
    """
    b, _, length, dk = q.shape
    h = v.shape[1]
    if q.shape[1] not in (1, h) or k.shape[1] not in (1, h):
        raise ValueError(f"q, k heads ({q.shape[1]}, {k.shape[1]}) must be 1 or v's {h}")
    kind = decay_kind(log_decay, (b, h, length, dk))
    g = log_decay
    if kind == "channel" and v.shape[-1] == 1 and length:  # a vector state per head: the step loop
        native = _native_channel_scan(q, k, v, g, initial_state)
        if native is not None:  # Mamba-1's case, fused on CPU (cab/ops/native.py)
            return native if return_final_state else native[0]
        factored = isinstance(g, tuple)
        tensors = (q, k, v, None if factored else g, g[0] if factored else None, g[1] if factored else None,
                   initial_state)
        graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        out, state = _ChannelScan.apply(*tensors, graph)
        return (out, state) if return_final_state else out
    if isinstance(g, tuple):
        g = _materialise(g)
    if kind == "position":
        g = g.expand(b, h, length)
    elif kind == "channel":
        g = g.expand(b, h, length, dk)
    state = initial_state
    c = max(1, min(chunk_size, length))
    full = length - length % c
    outs = []
    for lo, hi in ((0, full), (full, length)):  # whole chunks, then the tail as one shorter chunk
        if hi > lo:
            gs = g if kind in ("none", "head") else g[:, :, lo:hi]
            out, state = _chunked(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], gs, kind, min(c, hi - lo), state)
            outs.append(out)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0] if outs else v.new_zeros(b, h, 0, v.shape[-1])
    if not return_final_state:
        return out
    if state is None:
        state = q.new_zeros(b, h, dk, v.shape[-1])
    return out, state


def _materialise(log_decay: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(Δ (B, H, L), A (H, Dk)) -> g = Δ_t A (B, H, L, Dk)."""
    delta, rates = log_decay
    return delta[..., None] * rates[:, None, :]


def _chunked(q, k, v, g, kind, c, state):
    """causal_recurrence on a length that is a multiple of c -> (out (B, H, L, Dv), final state)."""
    b, _, length, dk = q.shape
    h, dv = v.shape[1], v.shape[-1]
    n = length // c
    qc, kc, vc = (t.reshape(b, t.shape[1], n, c, t.shape[-1]) for t in (q, k, v))  # q, k may have 1 head
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()  # j <= i inside a chunk

    if kind == "none":  # the state before each chunk is a prefix sum of the chunks' KᵀV: no loop
        intra = (qc @ kc.transpose(-1, -2)).masked_fill(~causal, 0.0) @ vc  # (B, H, n, C, Dv)
        chunk_kv = kc.transpose(-1, -2) @ vc  # (B, H, n, Dk, Dv)
        prefix = torch.cumsum(chunk_kv, dim=2)
        before = torch.cat([torch.zeros_like(prefix[:, :, :1]), prefix[:, :, :-1]], dim=2)  # exclusive, exact
        final = prefix[:, :, -1]
        if state is not None:
            before, final = before + state[:, :, None], final + state
        return (intra + qc @ before).reshape(b, h, length, dv), final

    # G: the log decay summed from the chunk's start (inclusive), so every exponent below is <= 0
    if kind == "head":
        cum = g.to(q.dtype).view(1, h, 1, 1) * torch.arange(1, c + 1, device=q.device, dtype=q.dtype)  # (1, H, 1, C)
    elif kind == "position":
        cum = torch.cumsum(g.reshape(b, h, n, c), dim=-1)  # (B, H, n, C)

    if kind in ("head", "position"):
        diff = (cum[..., :, None] - cum[..., None, :]).masked_fill(~causal, NEG_INF)  # G_i - G_j, <= 0 where j <= i
        intra = ((qc @ kc.transpose(-1, -2)) * torch.exp(diff)) @ vc
        q_in = qc * torch.exp(cum)[..., None]  # query i reads the chunk's incoming state decayed by exp(G_i)
        k_out = kc * torch.exp(cum[..., -1:] - cum)[..., None]  # key j reaches the chunk's end decayed
        chunk_kv = k_out.transpose(-1, -2) @ vc
        decay = torch.exp(cum[..., -1])[..., None, None].expand(-1, -1, n, -1, -1)  # (B|1, H, n, 1, 1)
    else:
        intra, chunk_kv, q_in, decay = _channel_local(qc, kc, vc, g.reshape(b, h, n, c, dk), causal)

    s = q.new_zeros(b, h, dk, dv) if state is None else state
    befores = []
    for i in range(n):  # L/C steps on (Dk, Dv) states
        befores.append(s)
        s = decay[:, :, i] * s + chunk_kv[:, :, i]
    out = intra + q_in @ torch.stack(befores, dim=2)
    return out.reshape(b, h, length, dv), s


def _channel_local(qc, kc, vc, gc, causal):
    """Per-channel decay inside each chunk. qc, kc: (B, H|1, n, C, Dk), vc: (B, H, n, C, Dv), gc: the per-step
    log decay (B, H, n, C, Dk) -> intra (B, H, n, C, Dv) (from a zero state), the chunk's end state
    (B, H, n, Dk, Dv), q_in = q ⊙ exp(G) (B, H, n, C, Dk) and the chunk's decay exp(G_end) (B, H, n, Dk, 1)."""
    b, _, n, c, dk = qc.shape
    h, dv = vc.shape[1], vc.shape[-1]
    if dv < SUB_CHUNK:  # step loop over the C positions of all chunks at once (Mamba's pass 1)
        s = vc.new_zeros(b, h, n, dk, dv)
        cum = torch.zeros_like(gc[:, :, :, 0])
        outs, q_in = [], []
        for t in range(c):  # G is summed here too: torch.cumsum over this axis is several times slower on CPU
            gt = gc[:, :, :, t]
            cum = cum + gt
            s = torch.exp(gt)[..., None] * s + kc[:, :, :, t, :, None] * vc[:, :, :, t, None, :]
            outs.append(qc[:, :, :, t, None, :] @ s)  # (B, H, n, 1, Dv)
            q_in.append(qc[:, :, :, t] * torch.exp(cum))
        q_in = torch.stack(q_in, dim=0).movedim(0, 3)  # stacking on a new leading dim is the cheap copy
        return torch.cat(outs, dim=-2), s, q_in, torch.exp(cum)[..., None]
    cum = torch.stack(list(itertools.accumulate(gc.unbind(3))), dim=3)  # G: the cumsum along C, as adds
    q_in, decay = qc * torch.exp(cum), torch.exp(cum[..., -1, :])[..., None]
    if c > SUB_CHUNK:  # the same recurrence over sub-chunks, all chunks as one batch of sequences
        flat = [t.expand(b, h, n, c, t.shape[-1]).reshape(b, h * n, c, t.shape[-1]) for t in (qc, kc, vc, gc)]
        out, s = causal_recurrence(*flat, chunk_size=SUB_CHUNK, return_final_state=True)
        return out.reshape(b, h, n, c, dv), s.reshape(b, h, n, dk, dv), q_in, decay
    # pairwise: w[i, j, d] = exp(G_id - G_jd) for j <= i, a (C, C, Dk) weight per chunk (C <= 16)
    diff = (cum[..., :, None, :] - cum[..., None, :, :]).masked_fill(~causal[..., None], NEG_INF)
    scores = (qc[..., :, None, :] * torch.exp(diff) * kc[..., None, :, :]).sum(-1)  # (B, H, n, C, C)
    k_out = kc * torch.exp(cum[..., -1:, :] - cum)
    return scores @ vc, k_out.transpose(-1, -2) @ vc, q_in, decay


def causal_recurrence_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step-by-step loop of `causal_recurrence` (L sequential steps) -> (out (B, H, L, Dv), final state)."""
    b, _, length, dk = q.shape
    h = v.shape[1]
    kind = decay_kind(log_decay, (b, h, length, dk))
    if isinstance(log_decay, tuple):
        log_decay = _materialise(log_decay)
    s = q.new_zeros(b, h, dk, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(length):
        if kind == "head":
            s = torch.exp(log_decay).view(1, h, 1, 1) * s
        elif kind == "position":
            s = torch.exp(log_decay[:, :, t])[..., None, None] * s
        elif kind == "channel":
            s = torch.exp(log_decay[:, :, t])[..., None] * s
        s = s + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ s)[:, :, 0])
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, v.shape[-1])
    return out, s


def causal_recurrence_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor,
    log_decay: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One position of `causal_recurrence` (its decode form): S' = diag(exp(g)) S + k vᵀ, o = S'ᵀ q.

    q, k: (B, H|1, Dk)  v: (B, H, Dv)  state S: (B, H, Dk, Dv) (the final state of a `causal_recurrence` over
    the positions before)  log_decay g <= 0 of this position: None, (H,) per head, (B|1, H|1) per position,
    (B|1, H|1, Dk) per channel, or (Δ (B|1, H|1), A (H, Dk)) for g = Δ A (Mamba). -> (o (B, H, Dv), S').
    S is updated in place (and returned): a generated token allocates no new state. O(H·Dk·Dv) per call,
    whatever the number of positions before: the recurrent form's constant cost. The same update and read
    as `causal_recurrence_reference`'s loop body.
    """
    if log_decay is not None:
        if isinstance(log_decay, tuple):  # (Δ, A): exp(Δ A) per channel
            delta, rates = log_decay
            decay = torch.exp(delta[..., None] * rates)  # (B, H, Dk)
        elif log_decay.dim() == 1:  # (H,)
            decay = torch.exp(log_decay)[:, None]  # (H, 1): the same for every channel
        elif log_decay.dim() == 2:  # (B, H): per position
            decay = torch.exp(log_decay)[..., None]  # (B, H, 1)
        else:  # (B, H, Dk)
            decay = torch.exp(log_decay)
        state.mul_(decay[..., None])  # (.., Dk, 1) broadcast over Dv
    state.addcmul_(k[..., :, None], v[..., None, :])  # + k vᵀ: (B, H, Dk, Dv)
    out = (q[..., None, :] @ state)[..., 0, :]  # Sᵀ q: (B, H, Dv)
    return out, state


def causal_recurrence_flops(
    batch: int, heads: int, length: int, dk: int, dv: int, chunk_size: int = 64, decay: str = "none"
) -> int:
    """Matrix-product FLOPs of `causal_recurrence` (2 per multiply-add), decay one of `DECAY_KINDS`.

    None / head / position, per chunk of C (the tail chunk with its own length): q kᵀ 2C²Dk, ·V 2C²Dv,
    the chunk's KᵀV 2C·Dk·Dv and the read of the carried state Q·S 2C·Dk·Dv.
    Channel: Dv = 1, none (the step loop and its read-out Σ_Dk q_t ⊙ S_t are elementwise; the chunk is
    unused); 1 < Dv < 16, the per-position reads q_t·S_t (2·Dk·Dv) and the
    carried-state read (2·Dk·Dv) per position; Dv >= 16, sub-chunks of <= 16 (the pairwise scores are
    elementwise: 2c²Dv + 4c·Dk·Dv per sub-chunk of c) plus the chunk-level read 2C·Dk·Dv. Decay weights,
    cumsums, exps and the step loop's updates are elementwise.
    """
    if decay not in DECAY_KINDS:
        raise ValueError(f"decay must be one of {DECAY_KINDS}, not {decay!r}")
    if decay == "channel" and dv == 1:
        return 0
    c = max(1, min(chunk_size, length)) if length else 1
    full = length - length % c
    total = 0
    for piece, cp in ((full, c), (length - full, length - full)):
        if piece:
            total += (piece // cp) * _chunk_flops(cp, dk, dv, decay)
    return batch * heads * total


def _chunk_flops(c: int, dk: int, dv: int, decay: str) -> int:
    """Per (batch, head) matrix-product FLOPs of one chunk of c positions in `_chunked`."""
    if decay != "channel":
        return 2 * c * c * (dk + dv) + 4 * c * dk * dv
    read = 2 * c * dk * dv  # the carried state, read by the chunk's queries
    if dv < SUB_CHUNK:
        return read + 2 * c * dk * dv  # + the step loop's per-position reads
    if c > SUB_CHUNK:
        return read + causal_recurrence_flops(1, 1, c, dk, dv, SUB_CHUNK, "channel")
    return read + 2 * c * c * dv + 2 * c * dk * dv  # pairwise: scores·V and the chunk's KᵀV


# ---------------------------------------------------------------------------------------------
# Per-channel decay with Dv = 1 (Mamba-1's selective scan): a step loop with a hand-written backward
#
# With Dv = 1 the state of a head is a vector (Dk,), so a chunked form gains nothing: its C×C weights
# exp(G_i - G_j) differ per channel, (C, C, Dk) numbers per chunk, C times the recurrence's own work, and
# the products q_t·S_t are matrix-vector products either way. Here every position is one fused op on a
# contiguous (B, H, Dk) slab of time-major (L, B, H, Dk) buffers,
#     S_t = a_t ⊙ S_{t-1} + k_t v_t        (torch.addcmul_: reads a_t and S_{t-1}, writes S_t),
# with the decays a_t = exp(g_t) <= 1 and the inputs k_t v_t computed for a block of positions first, one
# pass each, and the read-out Σ_Dk q_t ⊙ S_t after. The backward runs the adjoint recurrence
# λ_t = q_t dout_t + a_{t+1} ⊙ λ_{t+1} the same way and reduces dg_t = λ_t ⊙ a_t ⊙ S_{t-1} (the log
# decay's gradient), dv, dq and dk from λ and S, instead of autograd's graph of L small ops. The loop is
# exact: nothing is chunk-relative, nothing can overflow for any g. Blocks hold ~2 MB per buffer, so a
# block's passes read what the previous pass wrote from cache (~20% faster than passes over whole
# (L, B, H, Dk) tensors), and buffers are reused from block to block: on CPU a fresh buffer costs its page
# faults on first write, several times a pass over it. For the same reason only the states are kept for
# the backward; it redoes the decays (two passes over a block in cache).

_LOG2E = 1.0 / math.log(2.0)
SCAN_BLOCK_ELEMENTS = 1 << 19  # positions run in blocks of about this many numbers, whose passes stay in cache
SCAN_KEEP_ELEMENTS = 1 << 24  # up to this L·B·H·Dk the blocks' states are kept for the backward (which redoes
#                               the decays); past it only each block's first state is, and the backward reruns it


def _sum_last(t: torch.Tensor) -> torch.Tensor:
    """Σ over the last axis as a product with a ones vector, ~2× faster than torch.sum over a 16-wide axis.
    Backward only: in the forward the FLOP counters would count this sum as a matrix product."""
    ones = torch.ones(t.shape[-1], 1, dtype=t.dtype, device=t.device)
    return torch.mm(t.reshape(-1, t.shape[-1]), ones).view(t.shape[:-1])


def _buffer(spare: list, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An (L, B, H, Dk) buffer: a spare one of this call if one is big enough, else a new one."""
    numel = math.prod(shape)
    for i, t in enumerate(spare):
        if t.numel() >= numel:
            return spare.pop(i).view(-1)[:numel].view(shape)
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _decays(decay: tuple, out: torch.Tensor) -> torch.Tensor:
    """a_t = exp(g_t) into `out` (S, B, H, Dk), as exp2 (several times faster than exp on CPU)."""
    if decay[0] == "rates":  # g = Δ_t A from Δ (S, B, H) and A (H, Dk)
        torch.mul(decay[1][..., None], decay[2] * _LOG2E, out=out)
    else:  # g (S, B, H, Dk), a time-major view
        torch.mul(decay[1], _LOG2E, out=out)
    return out.exp2_()


def _block(q, k, v, decay, s0, spare, scratch):
    """Time-major q, k (S, B, 1|H, Dk), v (S, B, H), s0 (B, H, Dk) or None -> out (S, B, H), a, states.
    `spare`: buffers this call may reuse for a and the states; `scratch`: the read-out's, kept apart so
    that it is one buffer for the whole call even while every block's states are kept."""
    shape = (*v.shape, q.shape[-1])
    a = _decays(decay, _buffer(spare, shape, v))
    states = torch.mul(v[..., None], k, out=_buffer(spare, shape, v))  # k_t v_t
    a_t, s_t = a.unbind(0), states.unbind(0)
    if s0 is not None:
        s_t[0].addcmul_(a_t[0], s0)
    for t in range(1, len(s_t)):  # S_t = a_t ⊙ S_{t-1} + k_t v_t: one op per position
        s_t[t].addcmul_(a_t[t], s_t[t - 1])
    tmp = _buffer(scratch, shape, v)
    out = torch.mul(states, q, out=tmp).sum(-1)  # Σ_Dk q_t ⊙ S_t
    scratch.append(tmp)
    return out, a, states


def _block_backward(q, k, v, decay, s0, a, states, dout, carry, needs, spare):
    """Gradients of one block; carry = a_{t+1} ⊙ λ_{t+1} from the positions after it (or dS_final).
    Consumes a and states (their buffers hold dg and temporaries)."""
    lam = torch.mul(dout[..., None], q, out=_buffer(spare, states.shape, states))  # ∂out_t/∂S_t
    a_t, l_t = a.unbind(0), lam.unbind(0)
    if carry is not None:
        l_t[-1].add_(carry)
    for t in range(len(l_t) - 2, -1, -1):  # λ_t = q_t dout_t + a_{t+1} ⊙ λ_{t+1}
        l_t[t].addcmul_(a_t[t + 1], l_t[t + 1])
    carry = a_t[0] * l_t[0]  # to S_{-1}: the previous block or the initial state
    s, b, h, dk = states.shape
    dq = dk_ = dv = dg = ddelta = drates = None
    if needs["q"]:  # Σ_h dout_h S_h if q is shared by the heads (a (1×H)(H×Dk) product per position)
        dq = (torch.bmm(dout.reshape(s * b, 1, h), states.view(s * b, h, dk)).view(s, b, 1, dk)
              if q.shape[2] == 1 else dout[..., None] * states)
    a[1:].mul_(states[:-1])  # a_t ⊙ S_{t-1}; states is free after this
    a[0].zero_() if s0 is None else a[0].mul_(s0)
    if needs["v"]:
        dv = _sum_last(torch.mul(lam, k, out=states))  # Σ_Dk λ_t k_t
    if needs["k"]:
        dk_ = (torch.bmm(v.reshape(s * b, 1, h), lam.view(s * b, h, dk)).view(s, b, 1, dk)
               if k.shape[2] == 1 else v[..., None] * lam)
    if needs["g"]:
        a.mul_(lam)  # dg_t = λ_t ⊙ a_t ⊙ S_{t-1}
        if decay[0] == "rates":
            delta, rates = decay[1], decay[2]
            ddelta = _sum_last(torch.mul(a, rates, out=lam))  # Σ_Dk dg A
            drates = torch.mul(a, delta[..., None], out=lam).view(-1, *rates.shape).sum(0)  # Σ_t dg Δ
        else:
            dg = a  # handed to autograd
    spare.extend(t for t in (a, states, lam) if t is not dg)
    return dq, dk_, dv, dg, ddelta, drates, carry


class _ChannelScan(torch.autograd.Function):
    """S_t = diag(exp(g_t)) S_{t-1} + k_t v_t with Dv = 1; g = `log_decay` (B, H, L, Dk) or Δ_t A given as
    `delta` (B, H, L) and `rates` (H, Dk); `graph`: whether a backward may follow (else nothing is kept).
    -> out (B, H, L, 1), final state (B, H, Dk, 1)."""

    @staticmethod
    def forward(ctx, q, k, v, log_decay, delta, rates, s0, graph):
        ctx.set_materialize_grads(False)
        b, h, length, dk = v.shape[0], v.shape[1], v.shape[2], q.shape[-1]
        qt, kt = q.permute(2, 0, 1, 3).contiguous(), k.permute(2, 0, 1, 3).contiguous()  # (L, B, 1|H, Dk)
        vt = v[..., 0].permute(2, 0, 1).contiguous()  # (L, B, H)
        if log_decay is None:
            decay = ("rates", delta.expand(b, h, length).permute(2, 0, 1).contiguous(), rates)
        else:
            decay = ("full", log_decay.expand(b, h, length, dk).permute(2, 0, 1, 3))
        grad = graph  # needs_input_grad says True under no_grad too: whether a backward can come is the caller's
        per_step = b * h * dk
        keep = grad and length * per_step <= SCAN_KEEP_ELEMENTS  # else the backward recomputes each block
        seg = max(1, SCAN_BLOCK_ELEMENTS // per_step)
        outs, saved, starts, bounds, spare, scratch = [], [], [], [], [], []
        state = None if s0 is None else s0[..., 0]
        for lo in range(0, length, seg):
            hi = min(length, lo + seg)
            starts.append(state)
            bounds.append((lo, hi))
            out, a, states = _block(qt[lo:hi], kt[lo:hi], vt[lo:hi], _slice_decay(decay, lo, hi), state, spare,
                                    scratch)
            state = states[-1].clone()
            outs.append(out)
            if keep:  # the states only: the decays are two cheap passes to redo, and fresh memory is not cheap
                saved.append(states)
                spare.append(a)
            else:
                saved.append(None)
                spare += [a, states]
        if grad:
            ctx.decay_kind = decay[0]
            ctx.shapes = (None if log_decay is None else log_decay.shape, None if delta is None else delta.shape)
            ctx.bounds, ctx.saved, ctx.starts, ctx.has_s0 = bounds, saved, starts, s0 is not None
            ctx.save_for_backward(qt, kt, vt, *decay[1:])
        out = torch.cat(outs) if len(outs) > 1 else outs[0]
        return out.permute(1, 2, 0)[..., None], state[..., None]

    @staticmethod
    def backward(ctx, dout, dstate):
        qt, kt, vt, *rest = ctx.saved_tensors
        decay = (ctx.decay_kind, *rest)
        n = ctx.needs_input_grad
        needs = {"q": n[0], "k": n[1], "v": n[2], "g": n[3] or n[4] or n[5]}
        doutt = torch.zeros_like(vt) if dout is None else dout[..., 0].permute(2, 0, 1).contiguous()
        carry = None if dstate is None else dstate[..., 0]
        parts, spare, scratch = [], [], []
        for i in range(len(ctx.bounds) - 1, -1, -1):
            lo, hi = ctx.bounds[i]
            part = _slice_decay(decay, lo, hi)
            if ctx.saved[i] is None:  # not kept (a long input, or a second backward): recompute the block
                _, a, states = _block(qt[lo:hi], kt[lo:hi], vt[lo:hi], part, ctx.starts[i], spare, scratch)
            else:
                states = ctx.saved[i]
                a = _decays(part, _buffer(spare, states.shape, states))
            ctx.saved[i] = None  # consumed (its buffers are overwritten)
            *grads, carry = _block_backward(qt[lo:hi], kt[lo:hi], vt[lo:hi], part, ctx.starts[i], a, states,
                                            doutt[lo:hi], carry, needs, spare)
            parts.append(grads)
        parts.reverse()

        def join(i, dims):
            got = [p[i] for p in parts]
            if got[0] is None:
                return None
            return (torch.cat(got) if len(got) > 1 else got[0]).permute(*dims)

        dq, dk, dv = join(0, (1, 2, 0, 3)), join(1, (1, 2, 0, 3)), join(2, (1, 2, 0))
        dg, ddelta = join(3, (1, 2, 0, 3)), join(4, (1, 2, 0))
        drates = None if parts[0][5] is None else sum(p[5] for p in parts)
        g_shape, delta_shape = ctx.shapes
        return (dq if n[0] else None, dk if n[1] else None, None if dv is None else dv[..., None],
                dg.sum_to_size(g_shape) if n[3] else None, ddelta.sum_to_size(delta_shape) if n[4] else None,
                drates if n[5] else None, carry[..., None] if ctx.has_s0 and n[6] else None, None)


def _slice_decay(decay: tuple, lo: int, hi: int) -> tuple:
    """The decay of positions lo..hi (the time-major tensors; A is per head)."""
    return (decay[0], decay[1][lo:hi], *decay[2:])


# ---------------------------------------------------------------------------------------------
# The same scan compiled (cab/ops/native.py, csrc/channel_scan.cpp): Mamba-1's case on CPU, where the decay is
# given by its factors (Δ, A) and q, k are shared by the heads. Same results as `_ChannelScan` up to rounding
# (tested against the step loop in float64); `_ChannelScan` runs wherever the kernel does not apply or is off.


def _native_channel_scan(q, k, v, log_decay, initial_state):
    """(out (B, H, L, 1), final state (B, H, Dk, 1)) from the compiled scan, or None where it does not apply."""
    if not isinstance(log_decay, tuple) or q.shape[1] != 1 or k.shape[1] != 1:
        return None
    delta, rates = log_decay
    tensors = [q, k, v, delta, rates] + ([] if initial_state is None else [initial_state])
    if any(t.device.type != "cpu" or t.dtype != v.dtype for t in tensors) or v.dtype not in (torch.float32,
                                                                                                torch.float64):
        return None
    from .native import channel_scan_module

    module = channel_scan_module()
    if module is None:
        return None
    b, h, length, _ = v.shape
    s0 = v.new_empty(0) if initial_state is None else initial_state[..., 0].contiguous()
    # position-major (B, L, H): Mamba's own layout, so for Mamba these are views, not copies
    out, state = _NativeChannelScan.apply(q[:, 0].contiguous(), k[:, 0].contiguous(),
                                          v[..., 0].transpose(1, 2).contiguous(),
                                          delta.expand(b, h, length).transpose(1, 2).contiguous(),
                                          rates.contiguous(), s0, module)
    return out.transpose(1, 2)[..., None], state[..., None]


class _NativeChannelScan(torch.autograd.Function):
    """q, k (B, L, N), v, Δ (B, L, H), A (H, N), h0 (B, H, N) or empty -> y (B, L, H), h_L (B, H, N)."""

    @staticmethod
    def forward(ctx, q, k, v, delta, rates, s0, module):
        ctx.set_materialize_grads(False)
        none = v.new_empty(0)  # no bias, D or keep: the plain scan
        y, state, checkpoints = module.forward(q, k, v, delta, rates, s0, none, none, none, none, False, False, False)
        ctx.save_for_backward(q, k, v, delta, rates, checkpoints)
        ctx.module, ctx.has_s0 = module, s0.numel() > 0
        return y, state

    @staticmethod
    def backward(ctx, dy, dstate):
        q, k, v, delta, rates, checkpoints = ctx.saved_tensors
        empty = v.new_empty(0)
        dq, dk, dv, ddelta, drates, ds0, *_ = ctx.module.backward(
            q, k, v, delta, rates, checkpoints, ctx.has_s0, empty, empty, empty, empty, False, False, False,
            empty if dy is None else dy.contiguous(), empty if dstate is None else dstate.contiguous())
        return dq, dk, dv, ddelta, drates, (ds0 if ctx.has_s0 else None), None
