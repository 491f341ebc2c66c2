"""Causal `channel` with and without the CPU's flush-to-zero mode: the check behind its docstring.

    python benchmarks/channel_subnormals.py

One causal channel layer (width 512, 8 heads, batch 1, one thread, eval, no grad), one call per
mode at 4,096 and 32,768 tokens, the two modes alternated twice. Prints µs per token. The
per-position softmax sharpens as the prefix sums grow, so subnormal exponentials (slow on x86)
appear only at long lengths.
"""

from __future__ import annotations

import contextlib
import time

import torch

import cab.attentions.channel as channel
from cab.registry import build_attention

WITH_MODE = channel._subnormals_as_zero


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = build_attention("channel", dim=512, num_heads=8, pattern="causal_self").eval()
    for length in (4096, 32768):
        x = torch.randn(1, length, 512)
        with torch.no_grad():
            for flush in (False, True, False, True):
                # the layer switches the mode on around its loop; "off" replaces that switch by a no-op
                channel._subnormals_as_zero = WITH_MODE if flush else (lambda device: contextlib.nullcontext())
                start = time.perf_counter()
                layer(x)
                seconds = time.perf_counter() - start
                print(f"L={length} flush-to-zero={'on ' if flush else 'off'} {seconds / length * 1e6:.0f} µs/token", flush=True)
    channel._subnormals_as_zero = WITH_MODE


if __name__ == "__main__":
    main()
