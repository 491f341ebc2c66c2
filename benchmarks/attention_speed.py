"""Forward time and peak memory of attention layers at a few lengths, against softmax and vanilla.

    python benchmarks/attention_speed.py --attentions linear performer --lengths 4096 16384 \
        --pattern causal_self --out benchmarks/results/example.md

Each point runs in a fresh process (CPU peak memory is that point's alone); points run one at a
time across every benchmark on the machine (a file lock), so concurrent runs do not share cores
or memory. Writes a markdown table (time, memory, ratios to the baselines, log-log slopes
between consecutive lengths) and the raw points as JSON next to it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import platform
import sys
from pathlib import Path

import torch

from cab.bench.measure import measure_point_isolated
from cab.bench.scaling import scaling_exponent

LOCK = Path("/tmp/cab_bench.lock")


def slope(points: dict[int, float | None], lengths: list[int]) -> list[str]:
    """Log-log slope between each pair of consecutive lengths (cab.bench.scaling's exponent on two points)."""
    out = []
    for a, b in zip(lengths, lengths[1:]):
        pair = [{"length": n, "value": points.get(n)} for n in (a, b)]
        exponent, _ = scaling_exponent(pair, "value", top=2)
        out.append(f"{exponent:.2f}" if exponent is not None else "n/a")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attentions", nargs="+", required=True)
    parser.add_argument("--baselines", nargs="*", default=["softmax", "vanilla"])
    parser.add_argument("--pattern", default="causal_self")
    parser.add_argument("--lengths", nargs="+", type=int, default=[4096, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, required=True, help="markdown file; the JSON goes beside it")
    args = parser.parse_args(argv)

    from cab import list_attentions

    names = list(dict.fromkeys([b for b in args.baselines if b in list_attentions(args.pattern)] + args.attentions))
    rows: dict[str, dict[int, dict]] = {}
    LOCK.touch(exist_ok=True)
    with LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        torch.set_num_threads(args.threads)
        for name in names:
            rows[name] = {}
            for length in args.lengths:
                point = measure_point_isolated(
                    attention=name, pattern=args.pattern, length=length, batch=args.batch, dim=args.dim,
                    num_heads=args.heads, repeats=args.repeats, warmup=args.warmup,
                )
                rows[name][length] = point.as_dict()
                t = f"{point.time_median_s * 1e3:.1f} ms" if point.time_median_s else point.status
                m = f"{point.peak_memory_bytes / 2**20:.0f} MiB" if point.peak_memory_bytes is not None else "-"
                print(f"{name:>16} L={length:>6}  {t:>12}  {m:>10}", file=sys.stderr, flush=True)

    def val(name, length, key):
        return rows.get(name, {}).get(length, {}).get(key)

    lines = [
        f"# {args.pattern}: forward time and peak memory",
        "",
        f"batch {args.batch}, {args.heads} heads, width {args.dim} (head dim {args.dim // args.heads}), float32, "
        f"forward only (no grad), {args.threads} threads, median of {args.repeats} after {args.warmup} warm-up(s); "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}. Memory: peak RSS added by the call, "
        "one fresh process per point.",
        "",
        "| attention | " + " | ".join(f"L={n} time | L={n} mem" for n in args.lengths)
        + " | " + " | ".join(f"× softmax / × vanilla time L={n}" for n in args.lengths)
        + " | time slope | mem slope |",
        "|---|" + "---|---|" * len(args.lengths) + "---|" * len(args.lengths) + "---|---|",
    ]
    for name in names:
        cells = []
        for n in args.lengths:
            t, m, s = val(name, n, "time_median_s"), val(name, n, "peak_memory_bytes"), val(name, n, "status")
            cells.append(f"{t * 1e3:.1f} ms" if t else s)
            cells.append(f"{m / 2**20:.0f} MiB" if m is not None and s == "ok" else "-")
        ratios = []
        for n in args.lengths:
            t = val(name, n, "time_median_s")
            parts = []
            for base in ("softmax", "vanilla"):
                bt = val(base, n, "time_median_s")
                parts.append(f"{t / bt:.2f}" if t and bt else "n/a")
            ratios.append(" / ".join(parts))
        ts = slope({n: val(name, n, "time_median_s") for n in args.lengths}, args.lengths)
        ms = slope({n: val(name, n, "peak_memory_bytes") for n in args.lengths}, args.lengths)
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {', '.join(ts)} | {', '.join(ms)} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "points": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
