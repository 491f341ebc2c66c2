"""Landmark attention's two ways of reading the retrieved blocks, timed on a training step.

    python benchmarks/landmark_dense_read.py --out benchmarks/results/landmark_dense_read.md

`gather` copies the k·ℓ keys and values of each query's retrieved blocks (the form that scales to
long sequences); `dense` scores every key and zeroes the blocks that were not retrieved (the form
used up to `DENSE_MAX_KEYS` keys). Both give the same output (tests/test_zoo_part2.py); this
measures forward + backward of one layer at the leaderboard's sizes, with `vanilla` and `softmax`
for scale.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

import cab.attentions.landmark as landmark_module
from cab import build_attention


def step_ms(layer, x, repeats: int) -> float:
    for _ in range(2):
        layer(x).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        layer(x).sum().backward()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    default = landmark_module.DENSE_MAX_KEYS
    rows = []
    for length in args.lengths:
        x = torch.randn(args.batch, length, args.dim)
        cells = {}
        for name, keys in (("landmark gather", 0), ("landmark dense", default)):
            landmark_module.DENSE_MAX_KEYS = keys
            layer = build_attention("landmark", dim=args.dim, num_heads=args.heads, pattern="causal_self")
            cells[name] = step_ms(layer, x, args.repeats)
        landmark_module.DENSE_MAX_KEYS = default
        for name in ("vanilla", "softmax"):
            layer = build_attention(name, dim=args.dim, num_heads=args.heads, pattern="causal_self")
            cells[name] = step_ms(layer, x, args.repeats)
        rows.append((length, cells))
    names = list(rows[0][1])
    lines = [
        "# Landmark attention: gathered versus dense read of the retrieved blocks",
        "",
        f"`python benchmarks/landmark_dense_read.py --lengths {' '.join(map(str, args.lengths))} --batch {args.batch} "
        f"--dim {args.dim} --heads {args.heads} --repeats {args.repeats}`",
        "",
        f"One causal-self layer, forward + backward, ms per step (mean of {args.repeats} after 2 warm-up steps), "
        f"batch {args.batch}, width {args.dim}, {args.heads} heads, one torch thread, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}.",
        "",
        "| length | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    lines += [f"| {length} | " + " | ".join(f"{cells[n]:.1f}" for n in names) + " |" for length, cells in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
