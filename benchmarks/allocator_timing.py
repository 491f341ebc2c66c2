"""Why `cab bench` holds glibc's heap while it times a CPU point.

    python benchmarks/allocator_timing.py --out benchmarks/results/allocator_timing.md

For a few linear-time attentions (noncausal self, width 512, 8 heads, batch 1, one thread, eval,
no grad), the forward time per token at lengths 4,096 … 65,536, each point in a fresh process:
once with glibc's defaults (blocks of 32 MiB or more are fresh mmaps, unmapped when freed, so
every call faults its large temporaries in again) and once with the heap held (`held_heap`: no
mmap, no trim, freed blocks reused, as a caching allocator does). If per-token time is flat with
the heap held and climbs with the defaults, the climb is the allocator's, not the method's.
Takes the machine-wide bench lock, so it never times beside `cab bench`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cab.bench.job import bench_lock  # noqa: E402
from cab.bench.scaling import scaling_exponent  # noqa: E402

POINT = r"""
import json, statistics, sys, time, torch
from cab.bench.measure import held_heap
from cab.registry import build_attention
name, length, held, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "held", int(sys.argv[4])
torch.set_num_threads(1)
torch.manual_seed(0)
layer = build_attention(name, dim=512, num_heads=8, pattern="noncausal_self").eval()
x = torch.randn(1, length, 512)
def timed():
    samples = []
    with torch.no_grad():
        layer(x)  # warm-up: grows the heap to the call's peak when it is held
        for _ in range(repeats):
            start = time.perf_counter(); layer(x); samples.append(time.perf_counter() - start)
    return statistics.median(samples)
if held:
    with held_heap("cpu") as method:
        assert method, "not glibc"
        seconds = timed()
else:
    seconds = timed()
print(json.dumps({"seconds": seconds}))
"""


def point(name: str, length: int, held: bool, repeats: int) -> float:
    out = subprocess.run([sys.executable, "-c", POINT, name, str(length), "held" if held else "default", str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attentions", default="linear,performer,lka,halo")
    parser.add_argument("--lengths", default="4096,8192,16384,32768,65536")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    parser.add_argument("--lock", default="/tmp/cab_bench.lock", help="machine-wide bench lock ('' for none)")
    args = parser.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    names = args.attentions.split(",")
    rows = []
    with bench_lock(args.lock or None):
        for name in names:
            for held in (False, True):
                seconds = [point(name, n, held, args.repeats) for n in lengths]
                pts = [{"length": n, "status": "ok", "time_median_s": s} for n, s in zip(lengths, seconds)]
                exponent = scaling_exponent(pts, "time_median_s", top=3)[0]
                rows.append((name, "held" if held else "glibc defaults", seconds, exponent))
                print(rows[-1], flush=True)
    lines = [
        "# Allocator and CPU timing: per-token forward time, glibc defaults against the held heap",
        "",
        f"`python benchmarks/allocator_timing.py {' '.join(sys.argv[1:])}` on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, one thread; noncausal self, batch 1, 8 heads, width 512, eval, no grad; "
        f"median of {args.repeats} calls after one warm-up, each point in a fresh process. Cells: µs per token. "
        f"Exponent: slope of log time on log length over the top three lengths.",
        "",
        "| attention | allocator | " + " | ".join(f"{n:,}" for n in lengths) + " | exponent |",
        "|---|---|" + "---|" * len(lengths) + "---|",
    ]
    for name, mode, seconds, exponent in rows:
        cells = " | ".join(f"{s / n * 1e6:.1f}" for s, n in zip(seconds, lengths))
        lines.append(f"| {name} | {mode} | {cells} | {exponent:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
