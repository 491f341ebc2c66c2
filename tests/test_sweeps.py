"""Grids: resume, launchers (joblib, submitit_local, a local Ray cluster), crashes, wandb offline.

Each test runs the real `cab run -m` command in a subprocess on tiny smoke cells.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
TINY = ["task=mqar", "trainer=smoke", "trainer.steps=4", "task.train_examples=256", "task.test_examples=32"]


def cab_run(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cab.cli", "run", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})})


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def by_cell(recs: list[dict]) -> dict[tuple, dict]:
    return {(r["attention"], r["pattern"], r["seed"]): r for r in recs}


def test_resume_runs_only_missing_cells(tmp_path):
    results = tmp_path / "results"
    first = cab_run("-m", "attention=softmax", "pattern=causal_self", *TINY, f"results_dir={results}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    [done] = records(results)
    again = cab_run("-m", "attention=softmax,linear", "pattern=causal_self", *TINY, f"results_dir={results}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped") == 1
    recs = by_cell(records(results))
    assert len(recs) == 2 and recs[("softmax", "causal_self", 0)]["started_at"] == done["started_at"]
    # each record's command reruns that job alone, not the whole sweep
    command = recs[("linear", "causal_self", 0)]["command"]
    assert command.startswith("cab run ") and "attention=linear" in command and "softmax" not in command
    assert " -m " not in command


def test_mixed_task_pattern_sweep_skips_non_cells(tmp_path):
    results = tmp_path / "results"
    out = cab_run("-m", "attention=linear", "pattern=causal_self,noncausal_cross", *TINY, f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "does not exercise pattern noncausal_cross" in out.stderr
    assert [r["pattern"] for r in records(results)] == ["causal_self"]


def test_failures_do_not_stop_the_sweep(tmp_path):
    results = tmp_path / "results"
    out = cab_run("-m", "attention=softmax", "pattern=causal_self", "seed=0,1,2", "debug.fail=exception,null", *TINY,
                  f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    statuses = sorted(r["status"] for r in records(results))
    assert statuses == ["failed"] * 3 + ["ok"] * 3
    assert "failed 3" in out.stderr and "ok 3" in out.stderr  # the end-of-sweep summary


def test_joblib_two_workers_record_their_threads(tmp_path):
    results = tmp_path / "results"
    out = cab_run("-m", "launcher=joblib", "attention=softmax,linear", "pattern=causal_self", *TINY,
                  f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    recs = records(results)
    assert len(recs) == 2 and all(r["status"] == "ok" and r["env"]["threads"] == 1 for r in recs)


def test_submitit_local_crash_is_recorded_on_resume(tmp_path):
    """One job SIGKILLs itself (nothing in Python can catch that); under submitit the other job
    finishes, and a resume turns the dead job's marker into a `failed` (Crashed) record."""
    results = tmp_path / "results"
    args = ["-m", "launcher=submitit_local", "attention=softmax", "pattern=causal_self", "debug.fail=null,kill", *TINY,
            f"results_dir={results}"]
    first = cab_run(*args, f"hydra.sweep.dir={tmp_path / 'sweep1'}", cwd=tmp_path)
    ok = records(results)
    assert [r["status"] for r in ok] == ["ok"], first.stderr[-3000:]
    resumed = cab_run(*args, f"hydra.sweep.dir={tmp_path / 'sweep2'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    recs = {r["config"]["debug"]["fail"]: r for r in records(results)}
    assert recs[None]["started_at"] == ok[0]["started_at"], "the finished cell is skipped"
    assert recs["kill"]["status"] == "failed" and recs["kill"]["error"]["type"] == "Crashed"


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
                    reason="hydra-ray-launcher not installed (pip install 'cab[ray]')")
def test_local_ray_cluster_matches_sequential_run(tmp_path):
    grid = ["-m", "attention=softmax,linear", "pattern=causal_self,noncausal_self", *TINY, "threads=1"]
    seq, ray = tmp_path / "sequential", tmp_path / "ray"
    out = cab_run(*grid, f"results_dir={seq}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
    out = cab_run(*grid, "launcher=ray", "hydra.launcher.ray.init.num_cpus=2", f"results_dir={ray}", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = by_cell(records(seq)), by_cell(records(ray))
    assert len(a) == len(b) == 4
    for cell, record in a.items():
        assert b[cell]["status"] == record["status"] == "ok"
        assert b[cell]["run_id"] == record["run_id"]
        assert b[cell]["metrics"] == record["metrics"], cell


def test_wandb_offline_one_run_per_job(tmp_path):
    pytest.importorskip("wandb")
    results = tmp_path / "results"
    out = cab_run("-m", "logger=wandb", "attention=softmax,linear", "pattern=causal_self", *TINY,
                  f"results_dir={results}", cwd=tmp_path, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr[-3000:]
    recs = records(results)
    runs = sorted((results / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    for record in recs:
        [run_dir] = [r for r in runs if r.name.endswith(record["run_id"])]
        blob = next(run_dir.glob("*.wandb")).read_bytes()
        assert record["attention"].encode() in blob
        other = next(r for r in recs if r is not record)
        assert f'"{other["attention"]}"'.encode() not in blob or other["attention"] in record["attention"]
