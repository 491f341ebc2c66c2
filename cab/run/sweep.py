"""The end-of-sweep summary: each job of a multirun appends one line to the sweep's `jobs.jsonl`, and
`SweepSummary` (cab/run/callbacks.py) reads them back into status counts and the best attention per cell.

A cell whose column is not learnt (softmax misses the task's reference gate on some seed, cab/gates.py)
has no best attention: the summary says so rather than name a winner in noise.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

SWEEP_LOG = "jobs.jsonl"


def log_job(sweep_dir: str | Path, record: dict[str, Any]) -> None:
    """Append the job's outcome to the sweep's jobs.jsonl (for the end-of-sweep summary)."""
    line = {k: record.get(k) for k in ("run_id", "status", "attention", "task", "pattern", "seed", "primary_metric")}
    metric = record.get("primary_metric")
    line["value"] = (record.get("metrics") or {}).get(metric) if metric else None
    line["higher_is_better"] = ((record.get("metric_info") or {}).get(metric) or {}).get("higher_is_better", True)
    line["skipped"] = bool(record.get("_skipped"))
    # what the reference gate needs: the gate, its metric's value and its baselines (a few numbers)
    line["task_variant"] = record.get("task_variant")
    gate = record.get("gate")
    if gate is None and isinstance(record.get("task"), str):  # a record from before the field (a skipped cell)
        from cab.gates import GATES

        builtin = GATES.get(record["task"])
        gate = builtin.as_dict() if builtin else None
    if isinstance(gate, dict):
        line["gate"] = gate
        line["gate_value"] = (record.get("metrics") or {}).get(gate.get("metric"))
        refs = record.get("reference_metrics") or {}
        line["gate_baselines"] = {b: refs[b] for b in gate.get("baselines") or [] if isinstance(b, str) and b in refs}
    path = Path(sweep_dir) / SWEEP_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one short line per append: atomic enough on local and NFS storage
        f.write(json.dumps(line, default=str) + "\n")


def _column(job: dict[str, Any]) -> str:
    """The leaderboard's column name: the task, or task/variant (gCOG's split)."""
    return f"{job['task']}/{job['task_variant']}" if job.get("task_variant") else job["task"]


def summarise(sweep_dir: str | Path) -> tuple[Counter, dict[tuple[str, str], dict[str, Any]]]:
    """Status counts, and per (task, pattern) the best attention by mean primary metric over seeds,
    with the column's reference gate verdict (`gate`: cab.gates.judge's dict). Where the verdict is
    `not_learnt` the entry's `attention` is None: no mechanism is "best" on a task the reference has
    not learnt. `best_attention` keeps the raw leader for the curious; `ranking` lists every attention
    of the cell, best first ({attention, mean, seeds})."""
    from cab.gates import GATES, Gate, judge

    path = Path(sweep_dir) / SWEEP_LOG
    jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    counts = Counter(j["status"] for j in jobs)
    values: dict[tuple[str, str, str], list[float]] = {}
    direction: dict[tuple[str, str], bool] = {}
    for j in jobs:
        if j["status"] == "ok" and isinstance(j.get("value"), (int, float)):
            values.setdefault((_column(j), j["pattern"], j["attention"]), []).append(float(j["value"]))
            direction[(_column(j), j["pattern"])] = bool(j.get("higher_is_better", True))
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (task, pattern, attention), vals in values.items():
        mean = sum(vals) / len(vals)
        current = best.get((task, pattern))
        better = current is None or (mean > current["mean"] if direction[(task, pattern)] else mean < current["mean"])
        if better:
            best[(task, pattern)] = {"attention": attention, "mean": mean, "seeds": len(vals),
                                     "metric": next(j["primary_metric"] for j in jobs if _column(j) == task)}
    for (task, pattern), entry in best.items():
        higher = direction[(task, pattern)]
        ranked = sorted(((a, sum(v) / len(v), len(v)) for (t, p, a), v in values.items() if (t, p) == (task, pattern)),
                        key=lambda row: -row[1] if higher else row[1])
        entry["ranking"] = [{"attention": a, "mean": m, "seeds": n} for a, m, n in ranked]
        column = [j for j in jobs if _column(j) == task and j["pattern"] == pattern]
        gate = None
        for j in column:
            try:
                gate = Gate.from_dict(j["gate"]) if isinstance(j.get("gate"), dict) else gate
            except (TypeError, ValueError):
                continue
        gate = gate or GATES.get(task.split("/", 1)[0])
        runs = {}  # one per seed: the reference's latest line
        for j in column:
            if gate and j["attention"] == gate.reference:
                runs[j.get("seed")] = {"seed": j.get("seed"), "status": j["status"],
                                       "metrics": {gate.metric: j.get("gate_value")} if j.get("gate_value") is not None else {},
                                       "reference_metrics": j.get("gate_baselines") or {}}
        verdict = judge(gate, list(runs.values()))
        entry["gate"] = verdict
        entry["best_attention"] = entry["attention"]
        if verdict["status"] == "not_learnt":
            entry["attention"] = None
    return counts, best
