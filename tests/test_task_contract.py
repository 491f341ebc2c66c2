"""Every registered task, on every pattern it exercises, runs a tiny smoke cell and reports what its
record promises. Parametrized over the registry: a task registered later is tested here too."""

from __future__ import annotations

import math

import pytest

from cab import Pattern, list_tasks, task_spec
from cab.run.runner import run_job

CELLS = [(t, p) for t in list_tasks() for p in Pattern if p in task_spec(t).patterns]


@pytest.mark.parametrize("task,pattern", CELLS, ids=[f"{t}-{p.value}" for t, p in CELLS])
def test_smoke_cell_reports_its_metrics(smoke_config, task, pattern):
    record = run_job(smoke_config(f"task={task}", f"pattern={pattern.value}", "attention=linear", "trainer.steps=2"))
    assert record["status"] == "ok", record["error"]
    metrics = record["metrics"]
    assert record["primary_metric"] in metrics
    assert set(metrics) <= set(record["metric_info"]) | {m for m in metrics if "/" in m}, "every metric is described"
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in record["reference_metrics"].values())
    assert record["cost"]["flops_per_example"] > record["cost"]["attention_flops_per_example"] > 0
    # the reference gate (cab/gates.py) the record states judges a metric the task reports, in that
    # metric's direction, against baselines the task records
    gate = record["gate"]
    assert gate == task_spec(task).cls.reference_gate().as_dict()
    assert gate["metric"] in metrics and gate["higher_is_better"] == record["metric_info"][gate["metric"]]["higher_is_better"]
    assert set(gate["baselines"]) <= set(record["reference_metrics"])


@pytest.mark.parametrize("task,pattern", CELLS, ids=[f"{t}-{p.value}" for t, p in CELLS])
def test_longest_lengths_bound_every_sequence_the_attention_sees(smoke_config, task, pattern):
    """A length-bounded attention is built for the task's `longest_attention_lengths()`; a task that
    trains or evaluates a longer sequence than it states fails here with "exceeds max_len"."""
    bounded = "linformer" if pattern is Pattern.CAUSAL_CROSS else "cosformer"  # between them, every pattern
    record = run_job(smoke_config(f"task={task}", f"pattern={pattern.value}", f"attention={bounded}", "trainer.steps=2"))
    assert record["status"] == "ok", record["error"]
