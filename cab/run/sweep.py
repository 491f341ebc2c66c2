"""The end-of-sweep summary: each job of a multirun appends one line to the sweep's `jobs.jsonl`, and
`SweepSummary` (cab/run/callbacks.py) reads them back into status counts and the best attention per cell.
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
    path = Path(sweep_dir) / SWEEP_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:  # one short line per append: atomic enough on local and NFS storage
        f.write(json.dumps(line, default=str) + "\n")


def summarise(sweep_dir: str | Path) -> tuple[Counter, dict[tuple[str, str], dict[str, Any]]]:
    """Status counts, and the best attention per (task, pattern) by mean primary metric over seeds."""
    path = Path(sweep_dir) / SWEEP_LOG
    jobs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    counts = Counter(j["status"] for j in jobs)
    values: dict[tuple[str, str, str], list[float]] = {}
    direction: dict[tuple[str, str], bool] = {}
    for j in jobs:
        if j["status"] == "ok" and isinstance(j.get("value"), (int, float)):
            values.setdefault((j["task"], j["pattern"], j["attention"]), []).append(float(j["value"]))
            direction[(j["task"], j["pattern"])] = bool(j.get("higher_is_better", True))
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (task, pattern, attention), vals in values.items():
        mean = sum(vals) / len(vals)
        current = best.get((task, pattern))
        better = current is None or (mean > current["mean"] if direction[(task, pattern)] else mean < current["mean"])
        if better:
            best[(task, pattern)] = {"attention": attention, "mean": mean, "seeds": len(vals),
                                     "metric": next(j["primary_metric"] for j in jobs if j["task"] == task)}
    return counts, best
