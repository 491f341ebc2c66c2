"""Mamba-1's selective scan as one op, and the short convolution before it (Gu & Dao, 2023, Algorithm 2).

    u      = SiLU(b + Σ_j w_j ⊙ x_{t-(K-1)+j})                  `short_conv`  (reverse: x_{t+(K-1)-j})
    Δ_t    = keep_t · softplus(W_Δ delta_t + bias)              (W_Δ = delta_proj, bias and softplus optional)
    h_t    = exp(Δ_t A) ⊙ h_{t-1} + (Δ_t u_t) B_tᵀ              h: (E, N) per example
    y_t    = h_t C_t + keep_t · D ⊙ u_t                         `selective_scan`  (reverse: t from L-1 to 0)

Shapes: x, u, y (B, L, E); delta (B, L, E), or (B, L, R) with delta_proj (E, R) (Mamba's low-rank W_Δ,
R = ⌈dim/16⌉); A (E, N); B_t, C_t (B, L, N) shared by the E channels; D, bias (E,); w (E, K); keep (B, L) (1 real,
0 padding: a padded position neither writes nor decays the state, and its output is 0).
`reverse=True` runs the recurrence from the last position to the first, and the convolution looks forward:
equal to flipping the sequence, running the causal form and flipping back (the backward branch of a
bidirectional layer), without the flips.

The scan is `cab.ops.causal_recurrence` with heads = the E channels, Dk = N, Dv = 1, the decay given by its
factors (Δ, A); the torch form here is that call with the input products and the skip around it. On CPU both ops
run compiled (cab/ops/native.py, csrc/channel_scan.cpp): W_Δ's R multiply-adds per channel, the softplus, the
products Δ_t u_t, the skip and the SiLU are made inside the kernels' loops, where in torch each is a pass over
(B, L, E) forward and another backward (and W_Δ a matrix product with an inner size of R = 4, which runs far below
the CPU's matmul rate): at Mamba's sizes these cost as much as the recurrence itself.

References: `selective_scan_reference`, the step-by-step loop (`causal_recurrence_reference`); `short_conv_reference`, the shifted multiply-adds.
Elementwise work, no matrix products: `selective_scan_flops` counts it (6 FLOPs per position, channel and state;
the exp counted as one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .recurrence import causal_recurrence, causal_recurrence_reference


def _flip(t: torch.Tensor | None, reverse: bool) -> torch.Tensor | None:
    return t.flip(1) if reverse and t is not None else t


def short_conv_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, silu: bool = True,
                         reverse: bool = False) -> torch.Tensor:
    """x (B, L, E), weight (E, K), bias (E,) -> (B, L, E): K shifted multiply-adds in torch (zeros outside)."""
    x = _flip(x, reverse)
    length, taps = x.shape[1], weight.shape[1]
    padded = F.pad(x, (0, 0, taps - 1, 0))  # (B, L + K - 1, E), zeros before the first position
    out = bias + padded[:, :length] * weight[:, 0]
    for j in range(1, taps):
        out = torch.addcmul(out, padded[:, j : j + length], weight[:, j])
    return _flip(F.silu(out) if silu else out, reverse)


def short_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, silu: bool = True,
               reverse: bool = False) -> torch.Tensor:
    """Depthwise causal convolution of K taps (+ SiLU) along L: x (B, L, E), weight (E, K), bias (E,) -> (B, L, E).
    Compiled on CPU (one pass forward and one backward); elsewhere `short_conv_reference`."""
    module = _native(x, weight, bias)
    if module is None:
        return short_conv_reference(x, weight, bias, silu, reverse)
    rows_in_place = x.stride(-1) == 1 and x.stride(0) == x.shape[1] * x.stride(1)  # e.g. a chunk of W_in's output
    return _NativeShortConv.apply(x if rows_in_place else x.contiguous(), weight.t().contiguous(), bias.contiguous(),
                                  reverse, silu, module)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, Bm: torch.Tensor, Cm: torch.Tensor,
                   D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   keep: torch.Tensor | None = None, reverse: bool = False,
                   delta_proj: torch.Tensor | None = None) -> torch.Tensor:
    """Mamba-1's scan (module docstring): u (B, L, E); delta (B, L, E), or (B, L, R) with delta_proj (E, R);
    A (E, N); Bm, Cm (B, L, N); D, delta_bias (E,) or None; keep (B, L) or None -> y (B, L, E). Compiled on CPU;
    elsewhere `causal_recurrence` in torch."""
    optional = (D, delta_bias, keep, delta_proj)
    module = _native(u, delta, A, Bm, Cm, *(t for t in optional if t is not None))
    if module is None:
        return _selective_scan_torch(u, delta, A, Bm, Cm, D, delta_bias, delta_softplus, keep, reverse, delta_proj)
    empty = u.new_empty(0)
    extras = [empty if t is None else t.contiguous() for t in optional]
    return _NativeSelectiveScan.apply(u.contiguous(), delta.contiguous(), A.contiguous(), Bm.contiguous(),
                                      Cm.contiguous(), *extras, delta_softplus, reverse, module)


def _scan_inputs(u, delta, delta_bias, delta_softplus, keep, delta_proj):
    """Δ and u with the projection, bias, softplus and padding applied, as the kernel makes them."""
    if delta_proj is not None:
        delta = F.linear(delta, delta_proj)
    if delta_bias is not None:
        delta = delta + delta_bias
    if delta_softplus:
        delta = F.softplus(delta)
    if keep is not None:
        delta, u = delta * keep[..., None], u * keep[..., None]
    return u, delta


def _selective_scan_torch(u, delta, A, Bm, Cm, D, delta_bias, delta_softplus, keep, reverse, delta_proj):
    u, delta = _scan_inputs(u, delta, delta_bias, delta_softplus, keep, delta_proj)
    u, delta, Bm, Cm = (_flip(t, reverse) for t in (u, delta, Bm, Cm))
    v = (delta * u).transpose(1, 2)[..., None]  # (B, E, L, 1)
    out = causal_recurrence(Cm[:, None], Bm[:, None], v, (delta.transpose(1, 2), A))[..., 0].transpose(1, 2)
    return _flip(out if D is None else out + u * D, reverse)


def selective_scan_reference(u, delta, A, Bm, Cm, D=None, delta_bias=None, delta_softplus=False, keep=None,
                             reverse=False, delta_proj=None):
    """The step-by-step recurrence (`causal_recurrence_reference`, L sequential steps) -> y (B, L, E) and the final
    state h (B, E, N)."""
    u, delta = _scan_inputs(u, delta, delta_bias, delta_softplus, keep, delta_proj)
    u, delta, Bm, Cm = (_flip(t, reverse) for t in (u, delta, Bm, Cm))
    v = (delta * u).transpose(1, 2)[..., None]  # (B, E, L, 1)
    out, state = causal_recurrence_reference(Cm[:, None], Bm[:, None], v, (delta.transpose(1, 2), A))
    out = out[..., 0].transpose(1, 2)
    return _flip(out if D is None else out + u * D, reverse), state[..., 0]


def selective_scan_flops(batch: int, length: int, channels: int, states: int) -> int:
    """Elementwise FLOPs per scan: Δ_t A, Δ_t u_t B_t, the update (2) and the read-out (2) per (position, channel,
    state), and one exp; outside the matrix-product FLOPs that torch's counters see."""
    return 6 * batch * length * channels * states


# -- the compiled forms (cab/ops/native.py) ----------------------------------------------------


def _native(*tensors: torch.Tensor):
    """The compiled module, where it applies to these tensors (CPU, one float dtype) and can be built; else None."""
    dtype = tensors[0].dtype
    if dtype not in (torch.float32, torch.float64) or any(t.device.type != "cpu" or t.dtype != dtype for t in tensors):
        return None
    from .native import channel_scan_module

    return channel_scan_module()


class _NativeSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, D, bias, keep, proj, softplus, reverse, module):
        none = u.new_empty(0)
        y, _, checkpoints = module.forward(Cm, Bm, u, delta, A, none, bias, D, keep, proj, True, softplus, reverse)
        ctx.save_for_backward(u, delta, A, Bm, Cm, D, bias, keep, proj, checkpoints)
        ctx.flags, ctx.module = (softplus, reverse), module
        return y

    @staticmethod
    def backward(ctx, dy):
        u, delta, A, Bm, Cm, D, bias, keep, proj, checkpoints = ctx.saved_tensors
        none = u.new_empty(0)
        dC, dB, du, ddelta, dA, _, dbias, dD, dproj = ctx.module.backward(
            Cm, Bm, u, delta, A, checkpoints, False, bias, D, keep, proj, True, *ctx.flags, dy.contiguous(), none)
        given = [t.numel() > 0 for t in (D, bias, proj)]
        return (du, ddelta, dA, dB, dC, dD if given[0] else None, dbias if given[1] else None, None,
                dproj if given[2] else None, None, None, None)


class _NativeShortConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, taps, bias, reverse, silu, module):  # taps: (K, E), the weight transposed
        ctx.save_for_backward(x, taps, bias)
        ctx.flags, ctx.module = (reverse, silu), module
        return module.conv_forward(x, taps, bias, reverse, silu)[0]

    @staticmethod
    def backward(ctx, du):
        x, taps, bias = ctx.saved_tensors
        dx, dtaps, dbias = ctx.module.conv_backward(x, taps, bias, du.contiguous(), *ctx.flags)
        return dx, dtaps, dbias, None, None, None
