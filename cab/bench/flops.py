"""Forward FLOPs of a whole model: counted for ordinary layers, stated for attention layers.

torch's `FlopCounterMode` counts matrix products (2 FLOPs per multiply-add) but reports 0 for
SDPA on CPU and skips the non-matmul work of many mechanisms, so inside attention layers its count
is replaced by each layer's own analytic `flops(batch, len_q, len_k)`, evaluated on the shapes the
layer saw in this very forward pass.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(
    model: nn.Module,
    run_forward: Callable[[], object],
    attention_layers: Iterable[nn.Module],
    tested_layers: Iterable[nn.Module] = (),
) -> dict[str, int]:
    """FLOPs of one call of `run_forward()` on `model`: {"total": the whole model, "attention": the
    analytic sum over `attention_layers`, "tested": the same over `tested_layers` (a subset)}."""
    layers = list(attention_layers)
    seen: list[tuple[nn.Module, int, int, int]] = []

    def hook(module, args, kwargs, output):
        x = args[0]
        context = kwargs.get("context", args[1] if len(args) > 1 else None)
        len_k = context.shape[1] if context is not None else x.shape[1]
        seen.append((module, x.shape[0], x.shape[1], len_k))

    handles = [layer.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    names = {module: name for name, module in model.named_modules()}
    root = type(model).__name__
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run_forward()
    finally:
        for h in handles:
            h.remove()
    counts = counter.get_flop_counts()
    counted_inside = 0
    for layer in layers:
        name = names.get(layer)
        key = f"{root}.{name}" if name else None
        if key in counts:
            counted_inside += sum(counts[key].values())
    analytic = sum(int(m.flops(b, lq, lk)) for m, b, lq, lk in seen)
    tested = {id(m) for m in tested_layers}
    tested_flops = sum(int(m.flops(b, lq, lk)) for m, b, lq, lk in seen if id(m) in tested)
    return {"total": int(counter.get_total_flops()) - counted_inside + analytic, "attention": analytic, "tested": tested_flops}
