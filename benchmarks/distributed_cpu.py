"""Sequence parallelism on this CPU: memory per process, time, bytes sent, and the longest length under a cap.

    python benchmarks/distributed_cpu.py                  # measure (cab bench, ~10 CPU-minutes), then report
    python benchmarks/distributed_cpu.py --report-only    # the report from the committed records

(a) `cab bench` records (kind `efficiency`, `efficiency.world_size` / `.strategy`) of one attention layer,
    causal self, forward, the bench's `cpu` setting (batch 1, 8 heads, width 512, float32, one thread per
    process), at world sizes 1, 2 and 4, into leaderboard/results/cpu/efficiency/:
        ring    softmax   (exact; K, V round the ring)
        ulysses softmax   (SDPA core on H/P heads) and vanilla (dense core on H/P heads: memory (H/P)·L²)
        lasp    linear    (a state per rank, prefix by all-gather)
    Every point is a fresh group of processes (127.0.0.1, gloo). The machine has 2 cores: at world size 4
    the four processes share them, so time there is oversubscribed and memory and bytes are the figures.
(b) The training cell: `cab run task=lm trainer=smoke` in one process and under `torchrun --nproc-per-node 2`
    (ring for softmax, lasp for linear), records in benchmarks/results/distributed_cpu_train/: the metrics
    should agree to float32 rounding.
(c) The report, benchmarks/results/distributed_cpu.md: per-process peak memory and time against length
    at each world size; bytes sent per process against the formula (cab/distributed/cost.py) and the
    loopback interface's count; the longest length whose per-process peak stays under CAP against vanilla
    and softmax in one process (the published records of `experiment=efficiency`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cab.distributed.group import free_port  # noqa: E402
from cab.results.records import iter_records  # noqa: E402

RESULTS = ROOT / "leaderboard" / "results" / "cpu" / "efficiency"
TRAIN = ROOT / "benchmarks" / "results" / "distributed_cpu_train"
OUT = ROOT / "benchmarks" / "results" / "distributed_cpu.md"
RUNLOG = ROOT / "benchmarks" / "results" / "distributed_cpu_runlog.json"
CAP = 2**30  # bytes per process
PATTERN = "causal_self"
COMMON = ["pattern=causal_self", "repeats=3", "min_repeats=3", f"results_dir={RESULTS}"]

# (attention, strategy, world size, lengths, direction)
GRID = [
    ("softmax", "ring", 1, [1024, 2048, 4096], "forward"),
    ("softmax", "ring", 2, [1024, 2048, 4096, 8192], "forward"),
    ("softmax", "ring", 4, [1024, 2048, 4096, 8192], "forward"),
    ("softmax", "ulysses", 1, [1024, 2048, 4096, 8192], "forward"),
    ("softmax", "ulysses", 2, [1024, 2048, 4096, 8192], "forward"),
    ("softmax", "ulysses", 4, [1024, 2048, 4096, 8192], "forward"),
    ("vanilla", "ulysses", 2, [2048, 4096], "forward"),
    ("vanilla", "ulysses", 4, [2048, 4096, 8192], "forward"),
    ("linear", "lasp", 1, [1024, 4096, 16384, 32768], "forward"),
    ("linear", "lasp", 2, [1024, 4096, 16384, 32768], "forward"),
    ("linear", "lasp", 4, [1024, 4096, 16384, 32768], "forward"),
    # forward + backward: ring's backward recomputes each block, so its memory stays one block's
    ("softmax", "ring", 1, [1024, 2048], "forward_backward"),
    ("softmax", "ring", 2, [1024, 2048, 4096], "forward_backward"),
    ("softmax", "ring", 4, [1024, 2048, 4096], "forward_backward"),
]
# the training cell: (attention, strategy)
TRAINING = [("softmax", "ring"), ("linear", "lasp")]


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (and theirs: each point's ranks)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"


def measure(parts: set[str]) -> list[str]:
    notes = json.loads(RUNLOG.read_text()) if RUNLOG.exists() and "bench" not in parts else []
    for attention, strategy, size, lengths, direction in GRID if "bench" in parts else ():
        cmd = ["cab", "bench", f"attention={attention}", f"distributed.strategy={strategy}",
               f"distributed.world_size={size}", f"lengths=[{','.join(map(str, lengths))}]",
               f"directions=[{direction}]", *COMMON]
        start, load, cpu = time.time(), _load(), _children_cpu()
        subprocess.run(cmd, cwd=ROOT, check=True)
        notes.append(f"{attention} {strategy} P={size} {direction}: {time.time() - start:.0f} s wall, "
                     f"{_children_cpu() - cpu:.0f} CPU-s, load {load} before")
        RUNLOG.write_text(json.dumps(notes, indent=1))
    data = os.environ.get("CAB_DATA_DIR") or str(ROOT.parent / "shared" / "data")  # the lm task's text
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAB_DATA_DIR": data}
    for attention, strategy in TRAINING if "training" in parts else ():
        base = ["cab", "run", f"attention={attention}", "task=lm", "pattern=causal_self", "trainer=smoke", "threads=1",
                f"results_dir={TRAIN}"]
        subprocess.run(base, cwd=ROOT, check=True, env=env)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                    "127.0.0.1", "--master-port", str(free_port()), "--no-python"]
        subprocess.run([*torchrun, *base, f"distributed.strategy={strategy}", "distributed.world_size=2"], cwd=ROOT,
                       check=True, env=env)
    return notes


# ---------------------------------------------------------------------------------------------
# the report


def _records(root: Path, kind: str) -> list[dict]:
    return [r for _, r, _ in iter_records(root) if r and r.get("kind") == kind]


def _mib(n) -> str:
    return "–" if n is None else f"{n / 2**20:,.0f}"


def _ms(s) -> str:
    return "–" if s is None else f"{s * 1e3:,.0f}"


def _reach(points: list[dict]) -> tuple[int | None, bool]:
    """(longest ok length with peak memory <= CAP, whether a longer measured length went over it)."""
    ok = [p for p in points if p["status"] == "ok" and p.get("peak_memory_bytes") is not None]
    under = [p["length"] for p in ok if p["peak_memory_bytes"] <= CAP]
    over = [p["length"] for p in points if p["status"] == "oom" or (p.get("peak_memory_bytes") or 0) > CAP]
    best = max(under, default=None)
    return best, any(n > (best or 0) for n in over)


def report(notes: list[str]) -> str:
    eff = [r for r in _records(RESULTS, "efficiency") if r["pattern"] == PATTERN and r["status"] == "ok"
           and r["efficiency"]["direction"] in ("forward", "forward_backward")]
    every = {}  # (attention, strategy, world size, direction) -> the newest record
    for r in eff:
        e = r["efficiency"]
        if e.get("strategy"):
            key = (r["attention"], e["strategy"], e["world_size"], e["direction"])
            if key not in every or r["started_at"] > every[key]["started_at"]:
                every[key] = r
    single = {r["attention"]: r for r in eff if not r["efficiency"].get("strategy")
              and r["efficiency"]["direction"] == "forward"}
    lines = [
        "# Sequence parallelism on a 2-core CPU (`cab/distributed`)",
        "",
        "Generated by `python benchmarks/distributed_cpu.py` from the records it wrote with `cab bench` into "
        "`leaderboard/results/cpu/efficiency/` (kind `efficiency`, `efficiency.world_size`, `efficiency.strategy`). "
        "One attention layer, causal self, forward (eval, no grad; and forward + backward for ring), batch 1, "
        "8 heads, width 512, float32, one "
        "thread per process; every point a fresh group of `world_size` processes on 127.0.0.1 (gloo). "
        "Memory is each process's peak above its resident memory before the call (VmHWM reset, as `cab bench` "
        "measures one process); the tables give the largest rank's. **The machine has 2 cores and was shared with "
        "other engineers' jobs while this ran** (the load average before each job is in the run log below): at "
        "world size 4 four processes share 2 cores "
        "(oversubscribed, marked †), so time there is not a speed-up figure; at world size 2 it is, but under "
        "the others' load. Memory and bytes do not depend on the load.",
        "",
    ]
    if notes:
        lines += ["Run log (wall time of each `cab bench` job, its processes' CPU time where recorded, and the load "
                  "average before it; wall time includes any wait for the bench lock): " + "; ".join(notes) + ".",
                  f"In all, {sum(int(n.split(': ')[1].split(' s wall')[0]) for n in notes):,} s of wall time.", ""]
    groups = sorted({(a, s, d) for a, s, _, d in every}, key=lambda k: (k[2], ("ring", "ulysses", "lasp").index(k[1])))
    for attention, strategy, direction in groups:
        dist = {(a, s, p): r for (a, s, p, d), r in every.items() if d == direction}
        sizes = sorted(p for a, s, p in dist if (a, s) == (attention, strategy))
        lengths = sorted({pt["length"] for p in sizes for pt in dist[(attention, strategy, p)]["efficiency"]["points"]})
        lines += [f"## {strategy} · {attention} · {direction.replace('_', ' + ')}", "",
                  "| length | " + " | ".join(f"P={p} MiB/proc | P={p} ms" for p in sizes) + " |",
                  "|---:|" + "---:|---:|" * len(sizes)]
        for n in lengths:
            cells = []
            for p in sizes:
                rec = dist[(attention, strategy, p)]
                pt = next((x for x in rec["efficiency"]["points"] if x["length"] == n), None)
                over = rec["efficiency"]["distributed"]["oversubscribed"]
                if pt is None:
                    cells += ["", ""]
                elif pt["status"] != "ok":
                    cells += [pt["status"], ""]
                else:
                    cells += [_mib(pt["peak_memory_bytes"]), _ms(pt["time_median_s"]) + (" †" if over else "")]
            lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
        runs = ", ".join(f"P={p}: `{dist[(attention, strategy, p)]['run_id']}`" for p in sizes)
        lines += ["", f"Records: {runs}.", ""]

    lines += ["## Bytes sent per process, one call", "",
              "Counted: what each rank handed to `torch.distributed` (cab/distributed/comm.py); formula: "
              "cab/distributed/cost.py; loopback: the `lo` interface's transmitted bytes around the same call, "
              "divided by the world size (TCP/IP headers and the barriers' bytes included).", "",
              "| strategy · attention | direction | P | length | counted (each rank) | formula | loopback / process |",
              "|---|---|---:|---:|---:|---:|---:|"]
    order = lambda kv: (kv[0][3], kv[0][1], kv[0][0], kv[0][2])  # noqa: E731 - direction, strategy, attention, P
    for (attention, strategy, p, direction), rec in sorted(every.items(), key=order):
        if p == 1:
            continue
        for pt in rec["efficiency"]["points"]:
            if pt["status"] != "ok":
                continue
            counted = sorted(set(pt.get("bytes_sent_per_rank") or []))
            lines.append(f"| {strategy} · {attention} | {direction.replace('_', ' + ')} | {p} | {pt['length']:,} | "
                         f"{', '.join(f'{c:,}' for c in counted)} | {pt.get('bytes_formula') or 0:,} | "
                         f"{pt.get('loopback_bytes_per_process') or 0:,} |")
    lines.append("")

    lines += [f"## Longest length under {CAP / 2**30:g} GiB per process", "",
              "The longest measured length whose per-process peak memory stays at or under the cap (≥: the longest "
              "length measured, still under it). One-process baselines: the published `experiment=efficiency` "
              "records (same settings, same method).", "",
              "| method | processes | longest length under the cap | peak MiB/proc there | record |",
              "|---|---:|---:|---:|---|"]
    for name in ("vanilla", "softmax", "linear"):
        rec = single.get(name)
        if rec:
            best, beyond = _reach(rec["efficiency"]["points"])
            mem = next((p["peak_memory_bytes"] for p in rec["efficiency"]["points"] if p["length"] == best), None)
            lines.append(f"| {name}, one process | 1 | {'' if beyond else '≥ '}{best or 0:,} | {_mib(mem)} | "
                         f"`{rec['run_id']}` |")
    forward = {(a, s, p): r for (a, s, p, d), r in every.items() if d == "forward"}
    for (attention, strategy, p), rec in sorted(forward.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        best, beyond = _reach(rec["efficiency"]["points"])
        mem = next((pt["peak_memory_bytes"] for pt in rec["efficiency"]["points"] if pt["length"] == best), None)
        lines.append(f"| {strategy} · {attention} | {p} | {'' if beyond else '≥ '}{best or 0:,} | {_mib(mem)} | "
                     f"`{rec['run_id']}` |")
    lines.append("")

    lines += ["## Ring's memory formula", "",
              "Ring's per-process peak is one block's: at P ranks and length L it should equal one process's at "
              "length L/P (same block, (L/P)² scores per head), whatever P.", "",
              "| P | L | MiB/proc at (P, L) | MiB at (1, L/P) | ratio |", "|---:|---:|---:|---:|---:|"]
    one = forward.get(("softmax", "ring", 1))
    for p in (2, 4):
        rec = forward.get(("softmax", "ring", p))
        if not (rec and one):
            continue
        base = {pt["length"]: pt["peak_memory_bytes"] for pt in one["efficiency"]["points"] if pt["status"] == "ok"}
        for pt in rec["efficiency"]["points"]:
            ref = base.get(pt["length"] // p)
            if pt["status"] == "ok" and ref:
                lines.append(f"| {p} | {pt['length']:,} | {_mib(pt['peak_memory_bytes'])} | {_mib(ref)} | "
                             f"{pt['peak_memory_bytes'] / ref:.2f} |")
    lines.append("")

    train = _records(TRAIN, "train")
    if train:
        lines += ["## The training cell under torchrun", "",
                  "`cab run task=lm pattern=causal_self trainer=smoke threads=1`, in one process and under "
                  "`torchrun --nproc-per-node 2 --no-python cab run ... distributed.strategy=S "
                  "distributed.world_size=2` "
                  "(the layers under test split, the rest of the backbone replicated). Records in "
                  "`benchmarks/results/distributed_cpu_train/`.", "",
                  "| attention | strategy | world size | metrics | record |", "|---|---|---:|---|---|"]
        for r in sorted(train, key=lambda r: (r["attention"], str((r["attention_info"] or {}).get("distributed")))):
            d = (r.get("attention_info") or {}).get("distributed") or {}
            metrics = ", ".join(f"{k} {v:.6f}" for k, v in sorted(r["metrics"].items()))
            lines.append(f"| {r['attention']} | {d.get('strategy', 'one process')} | {d.get('world_size', 1)} | "
                         f"{metrics} | `{r['run_id']}` |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-only", action="store_true", help="write the report from the committed records")
    parser.add_argument("--parts", default="bench,training", help="what to measure: bench, training (comma-separated)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    notes = json.loads(RUNLOG.read_text()) if args.report_only and RUNLOG.exists() else [] if args.report_only \
        else measure(set(args.parts.split(",")))
    Path(args.out).write_text(report(notes) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
