"""`mamba` and `s4d` before and after the kernel layer, and `mamba`'s compiled scan against its torch form, on CPU.

    python benchmarks/mamba_scan.py --out benchmarks/results/mamba_scan.md

"Before" is the version before the kernel layer (`git show d29dbb5:attentions/<name>.py`, or --before-rev), loaded in
this process under the name `<name>_before`; "after" is the working tree's, for `mamba` twice: with its scan
compiled (cab/ops/native.py, the default on CPU) and in torch (CAB_NATIVE_KERNELS=0). One torch thread.

(a) The layer's forward (eval, no grad; batch 1, 8 heads, width 512, as `cab bench`) at 4,096 and
    16,384 tokens, causal and noncausal self: median of 3 calls after one warm-up, glibc's heap held
    as `cab bench` holds it; GFLOP/s by the working tree's stated `flops` for both versions (the same
    function, so the ratio of GFLOP/s is the ratio of speed).
(b) A training step (forward, backward, gradient clipping, AdamW) of every cell `mamba` trains in
    the `cpu` leaderboard grid (conf/task_scale/<task>/cpu.yaml: the task's model, batch and data,
    built through the registry and AttentionFactory as `cab run` builds it), for `softmax`, `mamba`
    and `mamba_before`: wall time per step (median of the timed steps) and process CPU time per
    step (the least of them: other processes on the machine inflate wall time, and CPU time less), the
    ratio to softmax's, and the projected training time (steps × median) against the grid's 180 s
    cap per training run. The four models' steps are interleaved, so a load falls on all alike.
(c) The grid's cells themselves, after: `cab run experiment=cpu_leaderboard attention=mamba task=<task>
    pattern=<pattern> seed=0` into a temporary results folder, each in its own process, with the grid's
    180 s limit: the record's status and its training, evaluation and total seconds.
The load average and the busiest other processes are recorded before and after: on a shared machine
the wall times are only as good as the quiet they were taken in. Takes the bench lock.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cab.bench.job import bench_lock  # noqa: E402
from cab.bench.measure import held_heap  # noqa: E402
from cab.patterns import Pattern  # noqa: E402
from cab.registry import build_attention, list_attentions, task_spec  # noqa: E402
from cab.ops.native import kernel_status  # noqa: E402
from cab.results.environment import environment  # noqa: E402
from cab.run.factory import AttentionFactory  # noqa: E402

# the cells `mamba` is trained on in the cpu grid (its supported patterns × the tasks that exercise them)
CELLS = [("lm", "causal_self"), ("mqar", "causal_self"), ("mqar", "noncausal_self"), ("listops", "noncausal_self"),
         ("lstf", "causal_self"), ("lstf", "noncausal_self"), ("mlm", "noncausal_self"),
         ("seq2seq", "causal_self"), ("seq2seq", "noncausal_self"), ("gcog", "noncausal_self")]
CAP_S = 180  # conf/experiment/cpu_leaderboard.yaml: trainer.max_seconds, per training run


class scan_form:
    """Run `mamba`'s scan compiled (True) or in torch (False) inside the block (CAB_NATIVE_KERNELS)."""

    def __init__(self, compiled: bool):
        self.compiled = compiled

    def __enter__(self):
        self.saved = os.environ.get("CAB_NATIVE_KERNELS")
        os.environ["CAB_NATIVE_KERNELS"] = "1" if self.compiled else "0"

    def __exit__(self, *exc):
        if self.saved is None:
            os.environ.pop("CAB_NATIVE_KERNELS", None)
        else:
            os.environ["CAB_NATIVE_KERNELS"] = self.saved


def load_before(name: str, rev: str) -> str:
    """Register the committed version of attentions/<name>.py as `<name>_before`; return that name."""
    source = subprocess.run(["git", "show", f"{rev}:attentions/{name}.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    source = source.replace(f'"{name}",', f'"{name}_before",', 1)
    # the committed mamba took pad_length from a helper module since replaced by cab.ops (the same function)
    source = source.replace("from ._part2_common import pad_length",
                            "from cab.ops import pad_to_multiple as pad_length")
    list_attentions()  # load the registry first, so the new entry is not overwritten
    exec(compile(source, f"{rev}:attentions/{name}.py", "exec"), {"__name__": f"cab_before_{name}"})
    return f"{name}_before"


def forward_point(name: str, pattern: str, length: int, repeats: int = 3) -> float:
    torch.manual_seed(0)
    layer = build_attention(name, dim=512, num_heads=8, pattern=pattern).eval()
    x = torch.randn(1, length, 512)
    samples = []
    with torch.no_grad(), held_heap("cpu"):
        layer(x)
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x)
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def task_params(task: str) -> tuple[dict, dict]:
    from omegaconf import OmegaConf

    base = OmegaConf.load(ROOT / "conf" / "task" / f"{task}.yaml")
    scale = OmegaConf.load(ROOT / "conf" / "task_scale" / task / "cpu.yaml")
    params = OmegaConf.to_container(OmegaConf.merge(base, scale.task), resolve=False)
    params.pop("name")
    if "data_dir" in params:
        params["data_dir"] = os.environ.get("CAB_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    return params, OmegaConf.to_container(scale.trainer)


def train_steps(variants: dict[str, tuple[str, bool]], task_name: str, pattern: str, steps: int,
                warmup: int = 2) -> dict:
    """Per-step wall and CPU seconds of `steps` training steps (after `warmup`) of each variant, as
    cab.run.training steps. variants: {label: (attention, compiled scan)}. The variants' steps are interleaved
    (one step of each in turn), so a load from other processes falls on all of them alike."""
    params, trainer = task_params(task_name)
    runs = {}
    for label, (attention, compiled) in variants.items():
        torch.manual_seed(0)
        task = task_spec(task_name).cls(pattern=Pattern.parse(pattern), seed=0, **params)
        factory = AttentionFactory(attention, Pattern.parse(pattern), {}, lengths=task.longest_attention_lengths())
        model = task.build_model(factory).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        runs[label] = (task, model, optimizer, task.train_batches(int(trainer["batch_size"])), compiled)
    wall = {label: [] for label in runs}
    cpu = {label: [] for label in runs}
    for i in range(warmup + steps):
        for label, (task, model, optimizer, batches, compiled) in runs.items():
            batch = next(batches)
            with scan_form(compiled):
                w, c = time.perf_counter(), time.process_time()
                loss = task.loss(task.forward(model, batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                w, c = time.perf_counter() - w, time.process_time() - c
            if i >= warmup:
                wall[label].append(w)
                cpu[label].append(c)
    return {label: {"wall": statistics.median(wall[label]), "cpu": min(cpu[label]), "steps": int(trainer["steps"])}
            for label in runs}


def grid_cell(task: str, pattern: str, results_dir: str) -> dict:
    """Run one cell of the cpu grid (seed 0) as `cab run` does; return its record."""
    env = dict(os.environ, CAB_DATA_DIR=os.environ.get("CAB_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    subprocess.run([sys.executable, "-m", "cab.cli", "run", "experiment=cpu_leaderboard", "attention=mamba",
                    f"task={task}", f"pattern={pattern}", "seed=0", f"results_dir={results_dir}",
                    "leaderboard_out=null", "force=true"], cwd=ROOT, env=env, capture_output=True, check=False)
    for path in Path(results_dir).glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("task") == task and record.get("pattern") == pattern:
            return record
    return {"status": "missing", "cost": {}}


def machine_load() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    try:
        top = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
        others = [line.split(None, 2) for line in top.splitlines()[1:]]
        busy = [f"{comm.strip()} {pcpu}%" for pid, pcpu, comm in others
                if int(pid) != os.getpid() and float(pcpu) >= 20]
    except (OSError, ValueError):
        busy = []
    return f"load average {load}" + (f"; other processes using a core: {', '.join(busy[:6])}" if busy else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mamba_scan.md"))
    parser.add_argument("--before-rev", default="d29dbb5")  # the last commit before the kernel layer
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per cell (after 2 warm-up)")
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--skip-cells", action="store_true", help="skip (c), the grid's cells run by `cab run`")
    parser.add_argument("--lock", default="/tmp/cab_bench.lock")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = environment()
    names = {n: load_before(n, args.before_rev) for n in ("mamba", "s4d")}
    lines = ["# `mamba` and `s4d`: before and after, CPU, one thread", ""]
    with bench_lock(args.lock):
        load_start = machine_load()
        print(load_start, flush=True)
        forward_rows = []
        if not args.skip_forward:
            for name in ("mamba", "s4d"):
                for pattern in ("causal_self", "noncausal_self"):
                    for length in (int(v) for v in args.lengths.split(",")):
                        stated = build_attention(name, dim=512, num_heads=8, pattern=pattern).flops(1, length, length)
                        before = forward_point(names[name], pattern, length)
                        with scan_form(False):
                            torch_form = forward_point(name, pattern, length)
                        with scan_form(True):
                            after = forward_point(name, pattern, length)
                        forward_rows.append((name, pattern, length, before, torch_form, after, stated))
                        print(f"{name} {pattern} {length}: {before:.3f} s -> {torch_form:.3f} s (torch) -> "
                              f"{after:.3f} s", flush=True)
        step_rows = []
        for task, pattern in CELLS:
            got = train_steps({"softmax": ("softmax", True), names["mamba"]: (names["mamba"], True),
                               "mamba_torch": ("mamba", False), "mamba": ("mamba", True)}, task, pattern, args.steps)
            step_rows.append((task, pattern, got))
            print(task, pattern, {a: round(v["wall"] * 1e3, 1) for a, v in got.items()}, flush=True)
        cell_rows = []
        if not args.skip_cells:
            with tempfile.TemporaryDirectory() as results_dir:
                for task, pattern in CELLS:
                    cell_rows.append((task, pattern, grid_cell(task, pattern, results_dir)))
                    print(task, pattern, cell_rows[-1][2].get("status"), cell_rows[-1][2].get("duration_s"), flush=True)
        load_end = machine_load()
    command = "python benchmarks/mamba_scan.py " + " ".join(sys.argv[1:])
    dirty = " (dirty)" if env["git_dirty"] else ""
    lines += [
        f"`{command.strip()}` on {env['device']} ({env['cpu_count']} cores), {platform.machine()}, "
        f"torch {env['torch']}, 1 thread; git {str(env['git_commit'])[:12]}{dirty}. Before: "
        f"`git show {args.before_rev}:attentions/<name>.py`; after: the working tree, `mamba`'s scan in torch "
        f"(CAB_NATIVE_KERNELS=0) and compiled ({kernel_status()['channel_scan']}).",
        "",
        f"Machine at the start: {load_start}. At the end: {load_end}.",
        "",
    ]
    if forward_rows:
        lines += [
            "## (a) Layer forward, batch 1, 8 heads, width 512, eval, no grad",
            "",
            "Median of 3 calls after a warm-up, glibc's heap held (as `cab bench`). GFLOP/s by the working tree's "
            "stated `flops` for both versions.",
            "",
            "| attention | pattern | tokens | before s | after, torch s | after, compiled s | before GFLOP/s | "
            "after GFLOP/s | speed-up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, pattern, length, before, torch_form, after, stated in forward_rows:
            compiled = f"{after:.3f}" if name == "mamba" else "–"
            lines.append(f"| {name} | {pattern} | {length:,} | {before:.3f} | {torch_form:.3f} | {compiled} | "
                         f"{stated / before / 1e9:.1f} | {stated / after / 1e9:.1f} | {before / after:.1f}× |")
        lines.append("")
    lines += [
        "## (b) Training step at the `cpu` task shapes (the cells `mamba` trains in the cpu grid)",
        "",
        f"Forward, backward, clipping and AdamW on the task's model and batch; {args.steps} timed steps after 2 "
        "warm-up steps, the four models' steps interleaved. Wall: median ms per step; CPU: least process CPU ms per "
        "step. Ratio: CPU time over "
        f"softmax's. Projected: the cell's steps × the median wall step (the grid's cap is {CAP_S} s per cell, "
        "training and evaluation).",
        "",
        "| task | pattern | steps | softmax wall / CPU ms | mamba before wall / CPU ms | × softmax "
        "| after, torch scan wall / CPU ms | × softmax | after, compiled scan wall / CPU ms | × softmax | projected s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, pattern, got in step_rows:
        soft, before, torch_form, after = got["softmax"], got[names["mamba"]], got["mamba_torch"], got["mamba"]
        cells = [f"{v['wall'] * 1e3:.0f} / {v['cpu'] * 1e3:.0f}" for v in (soft, before, torch_form, after)]
        lines.append(f"| {task} | {pattern} | {soft['steps']} | {cells[0]} | {cells[1]} | "
                     f"{before['cpu'] / soft['cpu']:.2f} | {cells[2]} | {torch_form['cpu'] / soft['cpu']:.2f} | "
                     f"{cells[3]} | {after['cpu'] / soft['cpu']:.2f} | {after['wall'] * after['steps']:.0f} |")
    within = [f"{t} {p.split('_')[0]}" for t, p, g in step_rows if g["mamba"]["cpu"] <= 3 * g["softmax"]["cpu"]]
    above = [f"{t} {p.split('_')[0]} ({g['mamba']['cpu'] / g['softmax']['cpu']:.2f}×)" for t, p, g in step_rows
             if g["mamba"]["cpu"] > 3 * g["softmax"]["cpu"]]
    over = [f"{t} {p.split('_')[0]}" for t, p, g in step_rows if g["mamba"]["wall"] * g["mamba"]["steps"] > CAP_S]
    lines += ["", f"After: within 3× of softmax's step (CPU time): {', '.join(within) or 'none'}; above: "
              f"{', '.join(above) or 'none'}. Projected training past the {CAP_S} s cap at the measured wall time: "
              f"{', '.join(over) or 'none'}."]
    if cell_rows:
        lines += [
            "",
            f"## (c) The grid's cells, run by `cab run` (after; seed 0, the grid's {CAP_S} s limit)",
            "",
            "| task | pattern | status | train s | eval s | total s |",
            "|---|---|---|---|---|---|",
        ]
        for task, pattern, record in cell_rows:
            cost = record.get("cost") or {}
            lines.append(f"| {task} | {pattern} | {record.get('status')} | {cost.get('train_s', '–')} | "
                         f"{cost.get('eval_s', '–')} | {record.get('duration_s', '–')} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
