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

Each branch is two ops of cab.ops (cab/ops/selective.py), with W_r, W_B, W_C as one linear layer between them:
`short_conv` (the depthwise conv and its SiLU) and `selective_scan` (W_Δ, b_Δ, the softplus, the recurrence and
the skip D ⊙ x, with the padding). The recurrence is `cab.ops.causal_recurrence`'s per-channel case with heads =
the E channels, Dk = N, Dv = 1: q = C_t and k = B_t shared by the channels, v = Δ_t x_t, the log decay Δ_t A
given by its two factors. It runs as the recurrence itself, not in chunks: Mamba-1's decay exp(Δ_t A) differs
per (channel, state), so the weights exp(A·(c_t − c_s)) (c: Δ summed over the chunk) of a chunk of T positions
form a (T, T, E, N) tensor, T times the recurrence's own elementwise work. Mamba-2's chunked form is matrix
products only because its A is one scalar per head, which lets the weight leave the sum over N. With a vector
state per channel the read-out h_t·C_t is a matrix-vector product in any form.
On CPU both ops are compiled (cab/ops/native.py, csrc/channel_scan.cpp; built once on first use): per example,
one pass over time with its state in cache as N rows of E channels, so that the decays, the update and the
read-out are vector loops over channels; Δ_t, Δ_t x_t and the skip are made in the same loop; the backward
reruns each chunk of positions from a kept state and runs the adjoint recurrence
λ_t = C_t dy_t + exp(Δ_(t+1) A) ⊙ λ_(t+1) with every gradient (W_Δ's and b_Δ's included) reduced in the same
loop. Elsewhere (GPU, CAB_NATIVE_KERNELS=0, no compiler) the ops run in torch: the recurrence one fused op per
position on a (B, E, N) slab with the same adjoint written by hand, the rest torch's own ops. Both are exact
(no chunk-relative exponents); time O(L·E·N), training memory O(L·E·N) in torch, O(L/T·E·N) compiled
(T ≈ 2^17/(E·N) positions per kept state). Which form ran is in the record (`attention_info.runtime.scan`).
`reference_forward` runs the layer with the ops' references (the step-by-step loop, the conv as shifted
multiply-adds). benchmarks/mamba_scan.py measures the layer's training step against softmax's, and against the
version before cab.ops.

Cost (`flops`, forward, 2 per multiply-add): the matrix products, per token
    2·dim·2E + 2·E·dim + branches · (2·E·k + 2·E·(R + 2N) + 2·R·E)
(in/out projections; per branch the depthwise conv, W_r/W_B/W_C and W_Δ). The scan has no matrix
products: its elementwise work, about 6·E·N FLOPs and one exp per position and branch (Δ_t A, x_t B_t,
the update, the read-out), is `scan_flops`, not counted in `flops` nor by torch's FLOP counters; at the
defaults (N = 16, E = 2·dim) it is the larger part of the CPU time.

Noncausal self: two scans (Vim-style bidirectional): the forward branch and a branch with its own
conv, projections, A and D run on the reversed sequence, i.e. its scan from the last position to the first and
its conv looking forward (`reverse=True`: the same sums, without flipping the sequence); y = y_fwd + y_bwd before
the gate.
Padding (True in key_padding_mask) sets x = 0 and Δ = 0 there, so a padded step neither writes nor
decays the state: it is skipped in both directions.

Recurrent form: h (E×N) and the conv's last k-1 inputs (E×(k-1)) per direction:
    state_size = E·N + E·(k-1)   (Zoology's `Mamba.state_size` counts E·N = 2·dim·N only).
Decode (causal): the conv reads its k-1 kept inputs and the token's, then one step of the scan
(`causal_recurrence_step` with the decay (Δ_t, A)); prefill keeps the scan's final h. O(E·N) per token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cab import AttentionLayer, Pattern, register_attention
from cab.attention import DecodeState
from cab.ops import (causal_recurrence, causal_recurrence_step, selective_scan, selective_scan_flops,
                     selective_scan_reference, short_conv, short_conv_reference)


class _SSMBranch(nn.Module):
    """Conv, selection projections, A and D of one scan direction (`reverse`: last position to first)."""

    def __init__(self, inner: int, d_state: int, d_conv: int, dt_rank: int, reverse: bool = False, dt_min=1e-3,
                 dt_max=0.1):
        super().__init__()
        self.d_conv, self.dt_rank, self.d_state, self.reverse = d_conv, dt_rank, d_state, reverse
        bound = 1 / math.sqrt(d_conv)
        self.conv_weight = nn.Parameter(torch.empty(inner, 1, d_conv).uniform_(-bound, bound))
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

    def selection(self, x: torch.Tensor, keep: torch.Tensor | None, conv=short_conv):
        """x: (B, L, E) pre-conv, keep (B, L) or None -> u (B, L, E), W_r u (B, L, R) (the scan applies W_Δ, its
        bias and the softplus), B, C (B, L, N)."""
        if keep is not None:
            x = x * keep[..., None]  # padding feeds no convolution
        u = conv(x, self.conv_weight[:, 0], self.conv_bias, silu=True, reverse=self.reverse)  # (B, L, E)
        dt_r, Bm, Cm = torch.split(self.x_proj(u), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        return u, dt_r, Bm, Cm

    def forward(self, x, keep, scan=selective_scan, conv=short_conv):
        u, delta, Bm, Cm = self.selection(x, keep, conv)
        return scan(u, delta, -torch.exp(self.A_log), Bm, Cm, self.D, delta_bias=self.dt_proj.bias,
                    delta_softplus=True, keep=keep, reverse=self.reverse, delta_proj=self.dt_proj.weight)


def _reference_scan(*args, **kwargs):
    return selective_scan_reference(*args, **kwargs)[0]


_NO_CROSS = "a state-space mixer has no keys: there is no source sequence to attend to"


@register_attention(
    "mamba",
    patterns={Pattern.CAUSAL_SELF, Pattern.NONCAUSAL_SELF},
    unsupported={Pattern.NONCAUSAL_CROSS: _NO_CROSS, Pattern.CAUSAL_CROSS: _NO_CROSS},
    family="state-space",
    paper={"title": "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
           "authors": "Gu & Dao", "venue": "arXiv", "year": 2023, "url": "https://arxiv.org/abs/2312.00752"},
)
class MambaMixer(AttentionLayer):
    def __init__(self, dim: int, num_heads: int, pattern: Pattern, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, dt_rank: int | None = None):
        super().__init__(dim, num_heads, pattern)  # num_heads is unused: the SSM is per channel
        self.d_state, self.d_conv, self.expand = d_state, d_conv, expand
        self.inner = expand * dim
        self.dt_rank = dt_rank or math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * self.inner, bias=False)
        self.forward_branch = _SSMBranch(self.inner, d_state, d_conv, self.dt_rank)
        self.backward_branch = None if self.causal else _SSMBranch(self.inner, d_state, d_conv, self.dt_rank,
                                                                               reverse=True)
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    def forward(self, x, context=None, key_padding_mask=None):
        return self._mix(x, context, key_padding_mask, selective_scan, short_conv)

    def reference_forward(self, x, context=None, key_padding_mask=None):
        """The layer with its scan run step by step and its convolution as shifted multiply-adds in torch."""
        return self._mix(x, context, key_padding_mask, _reference_scan, short_conv_reference)

    def _mix(self, x, context, key_padding_mask, scan, conv):
        self.check_inputs(x, context)
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        keep = None if key_padding_mask is None else (~key_padding_mask).to(x.dtype)  # (B, L)
        y = self.forward_branch(xs, keep, scan, conv)
        if self.backward_branch is not None:  # the same scan from the last position to the first
            y = y + self.backward_branch(xs, keep, scan, conv)
        return self.out_proj(y * F.silu(z))

    def runtime_info(self) -> dict:
        from cab.ops.native import kernel_status

        return {"scan": kernel_status()["channel_scan"] if self.in_proj.weight.device.type == "cpu" else "torch"}

    def flops(self, batch: int, len_q: int, len_k: int) -> int:
        e, n, r, k = self.inner, self.d_state, self.dt_rank, self.d_conv
        branches = 1 if self.causal else 2
        per_token = 2 * self.dim * 2 * e + 2 * e * self.dim  # in_proj, out_proj
        per_token += branches * (2 * e * k + 2 * e * (r + 2 * n) + 2 * r * e)  # conv, W_r/W_B/W_C, W_Δ
        return batch * len_q * per_token  # the scan has no matrix products (`scan_flops`)

    def scan_flops(self, batch: int, length: int) -> int:
        """Elementwise FLOPs of the scans, outside `flops` (`cab.ops.selective_scan_flops`, per branch)."""
        branches = 1 if self.causal else 2
        return branches * selective_scan_flops(batch, length, self.inner, self.d_state)

    def state_size(self, seq_len: int) -> int:
        per_direction = self.inner * self.d_state + self.inner * (self.d_conv - 1)  # h and the conv buffer
        return per_direction if self.causal else 2 * per_direction

    # -- decode: h (B, E, N) and the conv's last k-1 inputs (B, E, k-1) ----------------------------
    def prefill(self, x):
        self.check_decode(x)
        br = self.forward_branch
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        u, delta, Bm, Cm = br.selection(xs, None)
        delta = F.softplus(br.dt_proj(delta))  # (B, L, E), as `selective_scan` makes it
        v = (delta * u).transpose(1, 2)[..., None]  # (B, E, L, 1)
        out, h = causal_recurrence(Cm[:, None], Bm[:, None], v, (delta.transpose(1, 2), -torch.exp(br.A_log)),
                                   return_final_state=True)  # (B, E, L, 1), (B, E, N, 1)
        y = out[..., 0].transpose(1, 2) + u * br.D
        keep = self.d_conv - 1  # the conv's inputs the next token reads (zeros before the first)
        conv = F.pad(xs.transpose(1, 2), (keep, 0))[:, :, xs.shape[1]:]  # (B, E, k-1)
        return self.out_proj(y * F.silu(z)), DecodeState(x.shape[1], h=h[..., 0], conv=conv)

    def step(self, x_t, state):
        br = self.forward_branch
        xs, z = self.in_proj(x_t[:, 0]).chunk(2, dim=-1)  # (B, E) each
        window = torch.cat([state["conv"], xs[..., None]], dim=-1)  # (B, E, k): the conv's inputs
        u = F.silu((window * br.conv_weight[:, 0]).sum(-1) + br.conv_bias)  # the causal conv at this token
        dt_r, Bm, Cm = torch.split(br.x_proj(u), [br.dt_rank, br.d_state, br.d_state], dim=-1)
        delta = F.softplus(br.dt_proj(dt_r))  # (B, E)
        # h' = exp(Δ A) ⊙ h + (Δ u) B, y = h'·C: heads = the E channels, Dk = N, Dv = 1
        y, h = causal_recurrence_step(Cm[:, None], Bm[:, None], (delta * u)[..., None], state["h"][..., None],
                                      (delta, -torch.exp(br.A_log)))
        state["h"], state["conv"] = h[..., 0], window[..., 1:]
        state.position += 1
        y = y[..., 0] + u * br.D  # (B, E)
        return self.out_proj(y * F.silu(z))[:, None], state
