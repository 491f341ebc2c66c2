"""Small shape helpers shared by the ops (and by mechanisms that cut sequences into blocks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ceil_div(a: int, b: int) -> int:
    """⌈a / b⌉ for integers (b > 0)."""
    return -(-a // b)


def pad_to_multiple(t: torch.Tensor, multiple: int, dim: int = -2, value: float | bool = 0.0) -> torch.Tensor:
    """Pad dimension `dim` of `t` at the end with `value` up to a multiple of `multiple` (no copy if it is one).

    Works for bool tensors too (e.g. a keep mask padded with False), which F.pad's constant mode allows.
    """
    pad = (-t.shape[dim]) % multiple
    if not pad:
        return t
    dim = dim % t.dim()
    spec = [0, 0] * (t.dim() - 1 - dim) + [0, pad]  # F.pad lists the last dimension first
    return F.pad(t, spec, value=value)
