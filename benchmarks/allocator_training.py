"""Does holding glibc's heap speed up `cab run` on CPU? Real training cells, with and without it.

    python benchmarks/allocator_training.py --out benchmarks/results/allocator_training.md

`cab bench` holds glibc's heap while it times a CPU point (`cab.bench.measure.held_heap`: no mmap, no
trim, freed blocks reused, as a caching allocator does), because fresh mmaps of large temporaries
cost page faults on every call (benchmarks/results/allocator_timing.md). This measures the same
policy on whole training cells of `cab run` at the `cpu` task shapes (trainer=cpu, the CPU
leaderboard's budget), one torch thread: each cell is run with `cpu_allocator=held` and with
`cpu_allocator=default` (glibc's own settings), every run in a fresh process, the two policies
interleaved and their order alternated from repeat to repeat, so a load that drifts over the run
hits both alike. Reported, medians and every run: training throughput as the record gives it
(`cost.tokens_per_second`, wall clock), and per second of the process's CPU time (user + system,
getrusage around the training loop alone), which is what a loaded machine disturbs least: with one
thread, on a quiet machine, the two agree; on a busy one the wall clock also counts the time the
job waited for a core. Beside them the training loop's system time and minor page faults (the
mechanism: a held heap does not fault its temporaries in again), evaluation seconds, the process's
peak RSS, and the machine's load average before each run.
Takes the machine-wide bench lock, so it never times beside `cab bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cab.bench.job import bench_lock  # noqa: E402

RUN = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from conftest import compose
from cab.run.runner import run_job
import cab.run.progress as progress

usage = {}


class Timed(progress.TrainProgress):  # the training loop runs inside TrainProgress: its CPU time and page faults
    def __enter__(self):
        usage["start"] = resource.getrusage(resource.RUSAGE_SELF)
        return super().__enter__()

    def __exit__(self, *exc):
        usage["end"] = resource.getrusage(resource.RUSAGE_SELF)
        return super().__exit__(*exc)


progress.TrainProgress = Timed
task, pattern, attention, policy, results = sys.argv[2:7]
config = compose([f"task={task}", f"pattern={pattern}", f"attention={attention}", "trainer=cpu", "threads=1",
                  f"cpu_allocator={policy}", f"results_dir={results}", "force=true"])
before = resource.getrusage(resource.RUSAGE_SELF)
record = run_job(config)
after = resource.getrusage(resource.RUSAGE_SELF)
assert record["status"] == "ok", record["error"]
cost = record["cost"]
print(json.dumps({"allocator": record["allocator"], "tokens_per_second": cost["tokens_per_second"],
                  "train_s": cost["train_s"], "eval_s": cost["eval_s"], "peak_rss": cost["peak_memory_bytes"],
                  "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
                  "minor_faults": after.ru_minflt - before.ru_minflt,
                  "train_cpu_s": sum(getattr(usage["end"], f) - getattr(usage["start"], f) for f in ("ru_utime", "ru_stime")),
                  "train_sys_s": usage["end"].ru_stime - usage["start"].ru_stime,
                  "train_faults": usage["end"].ru_minflt - usage["start"].ru_minflt}))
"""

TESTS = str(Path(__file__).resolve().parents[1] / "tests")


def run_cell(cell: tuple[str, str, str], policy: str, results: str) -> dict:
    out = subprocess.run([sys.executable, "-c", RUN, TESTS, *cell, policy, results], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lm:causal_self:softmax,lstf:noncausal_self:probsparse",
                        help="task:pattern:attention, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None)
    parser.add_argument("--lock", default="/tmp/cab_bench.lock", help="machine-wide bench lock ('' for none)")
    args = parser.parse_args()
    cells = [tuple(c.split(":")) for c in args.cells.split(",")]
    policies = ("held", "default")
    runs: dict[tuple, dict[str, list[dict]]] = {c: {p: [] for p in policies} for c in cells}
    loads = []
    started = time.time()
    with bench_lock(args.lock or None), tempfile.TemporaryDirectory() as results:
        for repeat in range(args.repeats):
            order = policies if repeat % 2 == 0 else policies[::-1]
            for cell in cells:
                for policy in order:
                    loads.append(os.getloadavg()[0])
                    runs[cell][policy].append(run_cell(cell, policy, results))
                    print(repeat, ":".join(cell), policy, runs[cell][policy][-1], f"load {loads[-1]:.2f}", flush=True)
    minutes = (time.time() - started) / 60

    def med(xs):
        return statistics.median(xs)

    lines = [
        "# Holding glibc's heap in `cab run` on CPU: training throughput with and without",
        "",
        f"`python benchmarks/allocator_training.py {' '.join(sys.argv[1:])}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, python {platform.python_version()}; trainer=cpu (the CPU "
        f"leaderboard's shapes and steps), one torch thread, every run a fresh process, the two policies interleaved "
        f"(order alternating), {args.repeats} repeats, {minutes:.0f} min in all. `held`: glibc keeps freed memory for "
        f"reuse (no mmap, no trim; `cab.bench.measure.held_heap`); `default`: glibc's own settings.",
        "",
        f"Machine load (1-minute load average before each run): median {med(loads):.2f}, range "
        f"{min(loads):.2f}–{max(loads):.2f} on {os.cpu_count()} cores"
        + (" — other work was running beside these runs, so the spread below is partly theirs; a rerun on a quiet "
           "machine would tighten it." if max(loads) > 1.5 else "."),
        "",
        "| cell (task · pattern · attention) | allocator | training tokens/s, wall (median) | all runs | "
        "training tokens per CPU-second (median) | all runs | training CPU s (of it sys) | training minor faults | "
        "eval s | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []

    def per_cpu_s(r):  # tokens trained per second of the process's CPU time in the training loop
        return r["tokens_per_second"] * r["train_s"] / r["train_cpu_s"]

    for cell in cells:
        label = " · ".join(cell)
        for policy in policies:
            rs = runs[cell][policy]
            tps = [r["tokens_per_second"] for r in rs]
            cps = [per_cpu_s(r) for r in rs]
            lines.append(f"| {label} | {policy} (`{rs[0]['allocator']}`) | {med(tps):,.0f} | "
                         f"{', '.join(f'{t:,.0f}' for t in tps)} | **{med(cps):,.0f}** | {', '.join(f'{t:,.0f}' for t in cps)} | "
                         f"{med([r['train_cpu_s'] for r in rs]):.2f} ({med([r['train_sys_s'] for r in rs]):.2f}) | "
                         f"{med([r['train_faults'] for r in rs]):,.0f} | {med([r['eval_s'] for r in rs]):.2f} | "
                         f"{med([r['peak_rss'] for r in rs]) / 2**20:,.0f} MiB |")
        held, default = runs[cell]["held"], runs[cell]["default"]
        wall = med([r["tokens_per_second"] for r in held]) / med([r["tokens_per_second"] for r in default])
        cpu = med([per_cpu_s(r) for r in held]) / med([per_cpu_s(r) for r in default])
        paired = [per_cpu_s(h) / per_cpu_s(d) for h, d in zip(held, default)]
        faults = med([r["train_faults"] for r in held]) / med([r["train_faults"] for r in default])
        sys_s = med([r["train_sys_s"] for r in held]) / med([r["train_sys_s"] for r in default])
        rss = med([r["peak_rss"] for r in held]) / med([r["peak_rss"] for r in default])
        verdicts.append(
            f"- **{label}**: held / default, training tokens per CPU-second **{cpu:.3f}** (per repeat "
            f"{', '.join(f'{x:.3f}' for x in paired)}: {sum(x > 1 for x in paired)} of {len(paired)} above 1); "
            f"wall-clock training throughput {wall:.3f}; page faults in training {faults:.2f}×, system time "
            f"{sys_s:.2f}×; peak RSS {rss:.2f}×.")
    lines += ["", *verdicts, ""]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
