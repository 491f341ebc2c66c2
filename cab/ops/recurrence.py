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
                      q = C_t, k = B_t (both expanded to (B, E, L, N)), v = Δ_t x_t (B, E, L, 1),
                      log_decay = Δ_t A (B, E, L, N)  ->  y_t = out[..., 0] (+ D x_t); h_t = S[..., 0]

Fast form (`causal_recurrence`), the chunkwise-parallel form of Lightning Attention-2 / GLA: positions are
cut into chunks of C; inside a chunk the masked C×C products weighted by exp(G_i - G_j); across chunks the
state carried by an L/C-step loop (decay None: a prefix sum, no loop). Every exponent is chunk-relative and
<= 0 (G is summed from the chunk's start, and only later-minus-earlier differences are exponentiated), so
nothing overflows whatever the length or the size of g. A last partial chunk is run as its own piece from
the carried state (no padding steps), so the final state is exact and runs can be resumed: running
[0:L1] and then [L1:L] from the first run's final state equals one run over [0:L].
Per-channel decay cannot use one C×C score matrix; it runs a second, inner level: for Dv < 16 a step loop
over the C positions of all chunks at once (Mamba's pass 1; C + L/C sequential steps), otherwise
sub-chunks of 16 whose intra products weigh each (i, j, channel) pair explicitly.

Reference form: `causal_recurrence_reference`, the step-by-step loop. FLOPs: `causal_recurrence_flops`.
"""

from __future__ import annotations

import itertools

import torch

NEG_INF = float("-inf")
SUB_CHUNK = 16  # per-channel decay: inner chunk of the pairwise form, and the Dv below which steps are looped

DECAY_KINDS = ("none", "head", "position", "channel")


def decay_kind(log_decay: torch.Tensor | None, shape: tuple[int, int, int, int]) -> str:
    """Which decay `log_decay` is for a recurrence of shape (B, H, L, Dk): "none", "head" (H,), "position"
    (B, H, L) or "channel" (B, H, L, Dk) (size-1 B or H broadcast). Raises ValueError on any other shape."""
    if log_decay is None:
        return "none"
    b, h, length, dk = shape
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

    q, k: (B, H|1, L, Dk)  v: (B, H, L, Dv)  log_decay g <= 0: None, (H,), (B, H, L) or (B, H, L, Dk) (size-1
    batch/head dims broadcast for the last two)  initial_state: (B, H, Dk, Dv) or None (zeros).
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


def causal_recurrence_flops(
    batch: int, heads: int, length: int, dk: int, dv: int, chunk_size: int = 64, decay: str = "none"
) -> int:
    """Matrix-product FLOPs of `causal_recurrence` (2 per multiply-add), decay one of `DECAY_KINDS`.

    None / head / position, per chunk of C (the tail chunk with its own length): q kᵀ 2C²Dk, ·V 2C²Dv,
    the chunk's KᵀV 2C·Dk·Dv and the read of the carried state Q·S 2C·Dk·Dv.
    Channel: Dv < 16, the per-position reads q_t·S_t (2·Dk·Dv) and the carried-state read (2·Dk·Dv) per
    position; Dv >= 16, sub-chunks of <= 16 (the pairwise scores are elementwise: 2c²Dv + 4c·Dk·Dv per
    sub-chunk of c) plus the chunk-level read 2C·Dk·Dv. Decay weights, cumsums and exps are elementwise.
    """
    if decay not in DECAY_KINDS:
        raise ValueError(f"decay must be one of {DECAY_KINDS}, not {decay!r}")
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
