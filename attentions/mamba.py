"""Mamba's selective state-space mixer (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces"), in plain PyTorch: the non-attention baseline of Zoology and Based.

Per layer (the paper's Algorithm 2, "SSM + selection"), E = expand·dim channels, N states each:

    x, z   = split(W_in u)                               # (B, L, E) each
    x      = SiLU(causal depthwise conv_k(x))            # k = d_conv = 4
    Δ      = softplus(W_Δ (W_r x) + b_Δ)                 # (B, L, E), rank R = ⌈dim/16⌉
    B, C   = W_B x, W_C x                                # (B, L, N): input-dependent ("selective")
    A      = -exp(A_log)                                 # (E, N), S4D-real init A_en = -(n+1)
    h_t    = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t x_t) B_tᵀ      # (E, N) per example
    y_t    = h_t C_t + D ⊙ x_t
    out    = W_out (y ⊙ SiLU(z))

The scan is chunked (`selective_scan`): positions are cut into chunks of T; a first pass runs the
recurrence inside every chunk at once from a zero state (T steps over all chunks in parallel), a
second pass carries the true state across chunks (L/T steps) and adds its decayed contribution
C_t·(exp(A·Σ_{s<=t}Δ_s) ⊙ h_start). So there are T + L/T sequential steps instead of L, memory is
O(L·E + (L/T)·E·N), and `selective_scan_reference` is the step-by-step recurrence it must equal.

Cost: the matrix products (`flops`: in/out projections, W_r, W_B, W_C, W_Δ, the depthwise conv and
the scan's read-outs h·C, 4·L·E·N) plus the rest of the scan, elementwise work of about 7·L·E·N
FLOPs (exp(ΔA), the decay and the input term) that `FlopCounterMode` does not see (`scan_flops`);
at the defaults (N = 16, E = 2·dim) that elementwise scan dominates the CPU time.

Noncausal self: two scans (Vim-style bidirectional): the forward branch and a branch with its own
conv, projections, A and D run on the reversed sequence; y = y_fwd + y_bwd before the gate.
Padding (True in key_padding_mask) sets x = 0 and Δ = 0 there, so a padded step neither writes nor
decays the state: it is skipped in both directions.

Recurrent form: h (E×N) and the conv's last k-1 inputs (E×(k-1)) per direction:
    state_size = E·N + E·(k-1)   (Zoology's `Mamba.state_size` counts E·N = 2·dim·N only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import AttentionLayer, Pattern, register_attention

from ._part2_common import pad_length


def selective_scan(u, delta, A, Bm, Cm, D, chunk_size: int = 64, chunks_per_segment: int = 32):
    """Chunked scan. u, delta: (B, L, E); A: (E, N); Bm, Cm: (B, L, N); D: (E,) -> y (B, L, E).

    Runs over segments of `chunks_per_segment` chunks, carrying the state between segments, so the
    per-step tensors (B, chunks, E, N) stay the same size at every length (time per token constant)."""
    segment = max(1, chunk_size) * chunks_per_segment
    h = None
    ys = []
    for start in range(0, u.shape[1], segment):
        sl = slice(start, start + segment)
        y, h = _scan_segment(u[:, sl], delta[:, sl], A, Bm[:, sl], Cm[:, sl], chunk_size, h)
        ys.append(y)
    return torch.cat(ys, dim=1) + u * D


def _scan_segment(u, delta, A, Bm, Cm, chunk_size, h0):
    """One segment of the chunked scan from state h0 (B, E, N) or zeros -> (y without D·u, final state)."""
    b, length, e = u.shape
    n_state = A.shape[-1]
    t = max(1, min(chunk_size, length))
    du = pad_length(delta * u, t, dim=1)  # padded steps: Δ = 0 (no decay) and no input
    dl = pad_length(delta, t, dim=1)
    n = dl.shape[1] // t
    du, dl = du.view(b, n, t, e), dl.view(b, n, t, e)
    Bc = pad_length(Bm, t, dim=1).view(b, n, t, n_state)
    Cc = pad_length(Cm, t, dim=1).view(b, n, t, n_state)

    # pass 1: every chunk from a zero state, all chunks at once (T sequential steps); the step index
    # is moved to the front so that each step reads contiguous (B, n, ·) slices
    dl_t, du_t = dl.permute(2, 0, 1, 3).contiguous(), du.permute(2, 0, 1, 3).contiguous()  # (T, B, n, E)
    B_t, C_t = Bc.permute(2, 0, 1, 3).contiguous(), Cc.permute(2, 0, 1, 3).contiguous()  # (T, B, n, N)
    h = torch.zeros(b, n, e, n_state, dtype=u.dtype, device=u.device)  # (B, n, E, N)
    y_local = []
    for s in range(t):
        h = torch.exp(dl_t[s, ..., None] * A) * h + du_t[s, ..., None] * B_t[s, :, :, None, :]
        y_local.append(h @ C_t[s, ..., None])  # (B, n, E, 1): Σ_N h·C as a matrix-vector product
    h_end_local = h
    y = torch.cat(y_local, dim=-1).transpose(-1, -2)  # (B, n, T, E)

    # pass 2: carry the state across chunks (L/T sequential steps)
    cum = torch.cumsum(dl, dim=2)  # Σ_{s<=t} Δ_s inside each chunk, (B, n, T, E)
    h_start = torch.zeros(b, e, n_state, dtype=u.dtype, device=u.device) if h0 is None else h0
    corrections = []
    for i in range(n):
        decay = torch.exp(cum[:, i, :, :, None] * A)  # (B, T, E, N)
        corrections.append(((decay * h_start[:, None]) @ Cc[:, i, :, :, None]).squeeze(-1))  # (B, T, E)
        h_start = decay[:, -1] * h_start + h_end_local[:, i]
    y = y + torch.stack(corrections, dim=1)
    return y.reshape(b, n * t, e)[:, :length], h_start  # padded steps have Δ = 0: h_start is the final state


def selective_scan_reference(u, delta, A, Bm, Cm, D):
    """The step-by-step recurrence (L sequential steps); returns y and the final state h (B, E, N)."""
    b, length, e = u.shape
    h = torch.zeros(b, e, A.shape[-1], dtype=u.dtype, device=u.device)
    ys = []
    for s in range(length):
        h = torch.exp(delta[:, s, :, None] * A) * h + (delta[:, s] * u[:, s])[..., None] * Bm[:, s, None, :]
        ys.append((h * Cm[:, s, None, :]).sum(-1) + D * u[:, s])
    return torch.stack(ys, dim=1), h


class _SSMBranch(nn.Module):
    """Conv, selection projections, A and D of one scan direction."""

    def __init__(self, inner: int, d_state: int, d_conv: int, dt_rank: int, dt_min=1e-3, dt_max=0.1):
        super().__init__()
        self.d_conv, self.dt_rank, self.d_state = d_conv, dt_rank, d_state
        self.conv_weight = nn.Parameter(torch.empty(inner, 1, d_conv).uniform_(-1 / math.sqrt(d_conv), 1 / math.sqrt(d_conv)))
        self.conv_bias = nn.Parameter(torch.zeros(inner))
        self.x_proj = nn.Linear(inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner, bias=True)
        std = dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))

    def selection(self, x: torch.Tensor, keep: torch.Tensor | None):
        """x: (B, L, E) pre-conv -> (u, Δ, B, C) for the scan."""
        if keep is not None:
            x = x * keep
        xc = F.conv1d(F.pad(x.transpose(1, 2), (self.d_conv - 1, 0)), self.conv_weight, self.conv_bias,
                      groups=x.shape[-1])  # causal depthwise conv, (B, E, L)
        u = F.silu(xc.transpose(1, 2))  # (B, L, E)
        dt_r, Bm, Cm = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt_r))  # (B, L, E)
        if keep is not None:
            u, delta = u * keep, delta * keep
        return u, delta, Bm, Cm

    def forward(self, x, keep, chunk_size):
        u, delta, Bm, Cm = self.selection(x, keep)
        A = -torch.exp(self.A_log)
        return selective_scan(u, delta, A, Bm, Cm, self.D, chunk_size)


_NO_CROSS = "a state-space mixer has no keys: there is no source sequence to attend to"


@register_attention(
    "mamba",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
)
class MambaMixer(AttentionLayer):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, dt_rank: int | None = None, chunk_size: int = 64):
        super().__init__(dim, num_heads, pattern)  # num_heads is unused: the SSM is per channel
        self.d_state, self.d_conv, self.expand = d_state, d_conv, expand
        self.inner = expand * dim
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(dim, 2 * self.inner, bias=False)
        self.forward_branch = _SSMBranch(self.inner, d_state, d_conv, self.dt_rank)
        self.backward_branch = None if self.causal else _SSMBranch(self.inner, d_state, d_conv, self.dt_rank)
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    def forward(self, x, context=None, key_padding_mask=None):
        self.check_inputs(x, context)
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        keep = None if key_padding_mask is None else (~key_padding_mask)[..., None].to(x.dtype)  # (B, L, 1)
        y = self.forward_branch(xs, keep, self.chunk_size)
        if self.backward_branch is not None:
            flip_keep = None if keep is None else keep.flip(1)
            y = y + self.backward_branch(xs.flip(1), flip_keep, self.chunk_size).flip(1)
        return self.out_proj(y * F.silu(z))

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        e, n, r, k = self.inner, self.d_state, self.dt_rank, self.d_conv
        branches = 1 if self.causal else 2
        per_token = 2 * self.dim * 2 * e + 2 * e * self.dim  # in_proj, out_proj
        per_token += branches * (2 * e * k + 2 * e * (r + 2 * n) + 2 * r * e)  # conv, W_r/W_B/W_C, W_Δ
        t = max(1, min(self.chunk_size, len_q))
        scanned = -(-len_q // t) * t  # positions after padding to whole chunks
        readout = branches * 2 * (2 * e * n) * scanned  # the scan's two read-outs h·C (matrix-vector products)
        return batch * (len_q * per_token + readout)

    def scan_flops(self, batch: int, length: int) -> int:
        """Elementwise FLOPs of the scan outside `flops` (exp, decay, input; FlopCounterMode does not count them)."""
        branches = 1 if self.causal else 2
        return branches * 7 * batch * length * self.inner * self.d_state

    def state_size(self, seq_len: int) -> int:
        per_direction = self.inner * self.d_state + self.inner * (self.d_conv - 1)  # h and the conv buffer
        return per_direction if self.causal else 2 * per_direction
