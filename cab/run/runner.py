"""One cell of the grid: train, evaluate, measure, and write exactly one record, whatever happens.

`run_job(cfg)` is what `cab run` calls for every job, under any Hydra launcher. It never raises for
a problem of the run itself: an unsupported attention × pattern, an exception, a NaN loss, an
out-of-memory error or a timeout each end as a record with the matching status and the error (the
status from `cab.results.status.classify`, the classifier `cab bench` uses too). The training
itself is `cab.run.training`.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from cab.distributed.group import writes_results
from cab.patterns import Pattern
from cab.registry import ChoiceError, UnsupportedConfigError, attention_spec, import_modules, task_spec
from cab.results.environment import command_line, environment, hardware_label, job_command, now_iso
from cab.results.markers import reconcile_crashed, remove_marker, write_marker
from cab.results.records import SCHEMA, read_record, run_id_of, write_record
from cab.results.status import JobTimeout, classify, error_info
from cab.run.lr_selection import cell_lock, chosen_lr, ensure_selection, select, selecting_config, selects_lr, with_lr
from cab.run.training import allocator_policy, train_and_evaluate

RETRYABLE = ("failed", "oom", "nan", "timeout")  # statuses that `retry_failed=true` runs again


def check_cell(attention: str, task: str, pattern: str) -> None:
    """Raise ChoiceError (one line, valid choices named) for names that do not exist or a pattern the
    task does not exercise. An attention that lacks the pattern is *not* an error: it is recorded."""
    pattern_ = Pattern.parse(pattern)
    attention_spec(attention)
    spec = task_spec(task)
    if pattern_ not in spec.patterns:
        valid = ", ".join(p.value for p in Pattern if p in spec.patterns)
        raise ChoiceError(f"task {task!r} does not exercise pattern {pattern_.value}; its patterns: {valid}")


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise JobTimeout in the main thread after `seconds` (None or <= 0: no limit)."""
    if not seconds or seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise JobTimeout(f"job exceeded its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_job(config: dict[str, Any]) -> dict[str, Any]:
    """Run one cell from a resolved config (a plain dict) and return its record (also written).

    With `trainer.lr: select` the rate is chosen per cell on a validation split first
    (`cab.run.lr_selection`): the selecting seed's job trains every rate of the grid, the other
    seeds train at the chosen one (making the selection themselves if it is missing)."""
    if not selects_lr(config) or not _supported(config):
        return _run_once(config)  # an unsupported cell trains nothing: its record says why, at any rate
    results_dir = Path(config["results_dir"])
    selecting = selecting_config(config)
    if int(config["seed"]) == int(selecting["seed"]):
        with cell_lock(results_dir, run_id_of(selecting)):
            return _run_once(config, selection=True)
    chosen_by = ensure_selection(config, results_dir, lambda c: _run_once(c, selection=True))
    return _run_once(config, selected_by=chosen_by)


def _supported(config: dict[str, Any]) -> bool:
    import_modules(config.get("imports") or [])
    return Pattern.parse(config["pattern"]) in attention_spec(config["attention"]["name"]).patterns


def _run_once(config: dict[str, Any], selection: bool = False, selected_by: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """One job's record lifecycle: skip if recorded, marker, train (one rate, the grid of rates, or
    the rate `selected_by` chose), record whatever happens."""
    started = time.time()
    results_dir = Path(config["results_dir"])
    run_id = run_id_of(config)
    target = results_dir / f"{run_id}.json"
    writes = writes_results()  # under a launcher (torchrun: a sequence-parallel cell), rank 0 keeps the records
    if writes:
        reconcile_crashed(results_dir)  # records for earlier jobs here whose process died
    if target.exists() and not config.get("force", False):
        record = read_record(target)
        if not (config.get("retry_failed") and record.get("status") in RETRYABLE):
            record["_skipped"] = True
            return record

    record = _new_record(config, run_id)
    if writes:
        write_marker(record, results_dir, config["trainer"].get("max_seconds"))
    if selection:
        record = select(config, lambda trained: _train(_new_record(trained, run_id_of(trained)), trained))
        record.update(run_id=run_id, config=config,
                      command=job_command("cab run", seed=int(config["seed"])) or command_line())
    elif selected_by is not None:
        lr = chosen_lr(selected_by)
        if lr is None:  # every rate failed: this seed trains nothing and says why, as the selection did
            record["env"] = environment()
            record["hardware"] = hardware_label(record["env"])
            status = selected_by.get("status")
            if status == "unsupported":  # the layer cannot be built for this task's model: nothing to select
                record["status"], record["reason"] = status, selected_by.get("reason")
            else:
                record["status"] = status if status in RETRYABLE else "failed"
                record["error"] = {"type": "NoLearningRate", "message": f"the learning-rate selection of this "
                                   f"cell (run {selected_by['run_id']}, status {status}) chose no rate"}
        else:
            record = _train(_new_record(with_lr(config, lr), run_id), with_lr(config, lr))
            record["config"] = config
        record["lr_selection"] = {"chosen": lr, "selected_by": selected_by["run_id"]}
    else:
        record = _train(record, config)
    record["duration_s"] = round(time.time() - started, 3)
    if writes:
        write_record(record, results_dir)
        remove_marker(results_dir, run_id)
    return record


def _new_record(config: dict[str, Any], run_id: str) -> dict[str, Any]:
    pattern = Pattern.parse(config["pattern"])
    return {
        "schema": SCHEMA,
        "kind": "train",
        "run_id": run_id,
        "status": "ok",
        "attention": config["attention"]["name"],
        "pattern": pattern.value,
        "task": config["task"]["name"],
        "task_variant": None,
        "seed": int(config["seed"]),
        "scale": config["trainer"].get("name"),
        "hardware": None,
        "metrics": {},
        "metric_info": {},
        "primary_metric": None,
        "reference_metrics": {},
        "cost": {},
        "allocator": None,
        "attention_info": {},
        "reason": None,
        "config": config,
        "env": {},
        "command": job_command("cab run") or command_line(),
        "started_at": now_iso(),
        "duration_s": None,
        "error": None,
    }


def _train(record: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """Fill `record` by training `config` (a numeric rate); every failure becomes its status."""
    import torch

    started = time.time()
    import_modules(config.get("imports") or [])
    attention_cfg = dict(config["attention"])
    attention = attention_cfg.pop("name")
    task_cfg = dict(config["task"])
    task = task_cfg.pop("name")
    pattern = Pattern.parse(config["pattern"])
    trainer = config["trainer"]
    try:
        if config.get("threads"):
            torch.set_num_threads(int(config["threads"]))
        record["env"] = environment()
        record["hardware"] = hardware_label(record["env"])
        spec = attention_spec(attention)
        if pattern not in spec.patterns:
            record["status"] = "unsupported"
            record["reason"] = spec.unsupported[pattern]
        else:
            with time_limit(trainer.get("max_seconds")), allocator_policy(config) as record["allocator"]:
                train_and_evaluate(record, config, attention, attention_cfg, task, task_cfg, pattern)
    except UnsupportedConfigError as exc:  # the layer cannot exist in this task's model: not a failure
        record["status"], record["reason"] = "unsupported", str(exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record; the sweep goes on
        record["status"] = classify(exc)
        record["error"] = error_info(exc)
    record["duration_s"] = round(time.time() - started, 3)
    return record
