"""Learning-rate selection: each mechanism trains at the rate that suits it, chosen without the test set.

Mechanisms differ in their best learning rate, so a fixed rate ranks them partly by how well that
one rate suits each (Zoology sweeps the rate and reports the best). With `trainer.lr: select` a cell
is trained on one seed (`trainer.lr_select_seed`, 0) at every rate of `trainer.lr_grid`; the rate
whose model scores best on the task's *validation split* (held out of the training data, never the
test set) is chosen, and every other seed of the cell trains at that rate only.

The selecting seed's record is the run at the chosen rate (it is not trained again), with
`lr_selection`: the grid, the validation metric, each candidate's status, validation and test
values, and the choice. The other seeds' records carry `lr_selection` = {chosen, selected_by: the
selecting run's id}. A cell's selection is made once: a job of any seed that finds it missing makes
it (under a per-cell lock, so two processes never make it twice) and writes the selecting seed's
record, which that seed's own job then finds and keeps. So any order of jobs, on any launcher, in
any number of parts, gives the same records.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import math
from pathlib import Path
from typing import Any, Callable, Iterator

from cab.results.records import read_record, run_id_of

SELECT = "select"


def selects_lr(config: dict[str, Any]) -> bool:
    return config["trainer"].get("lr") == SELECT


def selecting_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config of the cell's selecting job (the same cell at seed `lr_select_seed`)."""
    selecting = copy.deepcopy(config)
    selecting["seed"] = int(config["trainer"].get("lr_select_seed", 0))
    return selecting


def with_lr(config: dict[str, Any], lr: float) -> dict[str, Any]:
    """The config trained at one rate (the record keeps the original config, `lr: select`)."""
    trained = copy.deepcopy(config)
    trained["trainer"]["lr"] = float(lr)
    return trained


@contextlib.contextmanager
def cell_lock(results_dir: Path, selecting_run_id: str) -> Iterator[None]:
    """An exclusive lock per cell (flock on results_dir/.locks/<selecting run id>.lock)."""
    locks = results_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{selecting_run_id}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def choose(candidates: list[dict[str, Any]], metric: str, higher_is_better: bool) -> dict[str, Any] | None:
    """The candidate with the best finite validation value (ties: the smaller rate), or None."""
    scored = [c for c in candidates if c["status"] == "ok" and c.get("validation") is not None
              and math.isfinite(c["validation"])]
    if not scored:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return min(scored, key=lambda c: (sign * c["validation"], c["lr"]))


def select(config: dict[str, Any], train_at: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Train the selecting seed at every rate of the grid and return the record of the chosen run
    (or, if no candidate finished, the best-failing one), with `lr_selection` filled in.

    `train_at(config)` trains one config with a numeric rate and returns its record (never raises).
    """
    selecting = selecting_config(config)
    grid = [float(lr) for lr in config["trainer"]["lr_grid"]]
    records = [train_at(with_lr(selecting, lr)) for lr in grid]
    first_ok = next((r for r in records if r["status"] == "ok"), None)
    metric = (first_ok or records[0]).get("primary_metric")
    info = ((first_ok or records[0]).get("metric_info") or {}).get(metric or "", {})
    higher = bool(info.get("higher_is_better", True))
    candidates = []
    for lr, record in zip(grid, records):
        validation = (record.get("validation_metrics") or {}).get(metric) if metric else None
        candidates.append({"lr": lr, "status": record["status"], "validation": validation,
                           "test": (record.get("metrics") or {}).get(metric) if metric else None,
                           "train_s": (record.get("cost") or {}).get("train_s")})
    chosen = choose(candidates, metric, higher) if metric else None
    index = grid.index(chosen["lr"]) if chosen else 0
    record = records[index]
    record["lr_selection"] = {
        "grid": grid,
        "metric": metric,
        "split": "validation",
        "higher_is_better": higher,
        "candidates": candidates,
        "chosen": chosen["lr"] if chosen else None,
    }
    if chosen is None and record["status"] == "ok":  # every run finished but none has a validation value
        record["status"] = "failed"
        record["error"] = {"type": "NoValidation", "message": f"task {record.get('task')!r} reports no validation "
                           f"{metric!r}: a learning rate cannot be selected (give the task validation_examples)"}
    return record


def chosen_lr(selecting_record: dict[str, Any]) -> float | None:
    return (selecting_record.get("lr_selection") or {}).get("chosen")


def ensure_selection(config: dict[str, Any], results_dir: Path,
                     run_selecting_job: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The cell's selecting record: read it, or (under the cell's lock) make it with
    `run_selecting_job(selecting config)`, which writes it."""
    selecting = selecting_config(config)
    selecting_id = run_id_of(selecting)
    target = results_dir / f"{selecting_id}.json"
    with cell_lock(results_dir, selecting_id):
        if target.exists():
            record = read_record(target)
            if "lr_selection" in record or record.get("status") != "ok":
                return record
        return run_selecting_job(selecting)
