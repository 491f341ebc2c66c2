"""run_job: one record per job, whatever happens (ok, unsupported, failed, nan, oom, timeout)."""

from __future__ import annotations

import json

import pytest

from cab import Pattern, register_attention
from cab.results.records import REQUIRED, SCHEMA, validate
from cab.run.runner import run_job

SMOKE = ["attention=linear", "task=mqar", "pattern=causal_self", "trainer.steps=10"]


def test_ok_record_has_every_field(smoke_config, tmp_path):
    config = smoke_config(*SMOKE)
    record = run_job(config)
    assert record["status"] == "ok", record["error"]
    assert validate(record) == []
    path = tmp_path / "results" / f"{record['run_id']}.json"
    on_disk = json.loads(path.read_text())
    assert set(REQUIRED) <= set(on_disk) and on_disk["schema"] == SCHEMA and on_disk["kind"] == "train"
    assert on_disk["attention"] == "linear" and on_disk["pattern"] == "causal_self" and on_disk["task"] == "mqar"
    assert 0.0 <= on_disk["metrics"]["accuracy"] <= 1.0
    assert on_disk["metric_info"]["accuracy"]["higher_is_better"] is True
    cost = on_disk["cost"]
    assert cost["params"] > 0 and cost["flops_per_example"] > cost["attention_flops_per_example"] > 0
    assert cost["tokens_per_second"] > 0 and cost["state_size"] > 0
    assert on_disk["env"]["torch"] and on_disk["env"]["threads"] >= 1
    assert not list((tmp_path / "results").glob(".*.tmp")), "temporary files must not remain"


def test_finished_cell_is_skipped_unless_forced(smoke_config):
    config = smoke_config(*SMOKE)
    first = run_job(config)
    again = run_job(config)
    assert again.get("_skipped") and again["started_at"] == first["started_at"]
    forced = run_job({**config, "force": True})
    assert not forced.get("_skipped") and forced["run_id"] == first["run_id"]


def test_run_id_depends_on_seed_not_on_results_dir(smoke_config, tmp_path):
    from cab.results.records import run_id_of

    a = smoke_config(*SMOKE)
    assert run_id_of(a) == run_id_of({**a, "results_dir": str(tmp_path / "elsewhere"), "force": True})
    assert run_id_of(a) != run_id_of({**a, "seed": 1})
    moved = {**a, "task": {**a["task"], "data_dir": "/elsewhere"}}  # where the data lies is not the cell
    assert run_id_of(moved) == run_id_of(a)
    assert run_id_of({**a, "task": {**a["task"], "seq_len": 32}}) != run_id_of(a)


def test_same_config_and_seed_give_identical_metrics(smoke_config):
    config = smoke_config(*SMOKE)
    first = run_job(config)
    second = run_job({**config, "force": True})
    assert first["metrics"] == second["metrics"]


@pytest.mark.parametrize("fail,status", [("exception", "failed"), ("nan", "nan"), ("oom", "oom"), ("timeout", "timeout")])
def test_failures_become_records(smoke_config, fail, status):
    record = run_job(smoke_config(*SMOKE, f"debug.fail={fail}"))
    assert record["status"] == status
    assert record["error"]["message"] and "Traceback" in record["error"]["traceback"]
    assert validate(record) == []


def test_time_limit_ends_a_job_as_timeout(smoke_config):
    record = run_job(smoke_config(*SMOKE, "trainer.steps=100000", "trainer.max_seconds=1"))
    assert record["status"] == "timeout" and "time limit" in record["error"]["message"]


def test_unsupported_pattern_is_a_record_not_a_crash(smoke_config):
    @register_attention("self_only_runner_test", patterns={Pattern.NONCAUSAL_SELF},
                        unsupported={Pattern.CAUSAL_SELF: "looks ahead by design",
                                     Pattern.NONCAUSAL_CROSS: "x", Pattern.CAUSAL_CROSS: "x"})
    class SelfOnly:
        """Test double."""

        def __init__(self, dim, num_heads, pattern):
            pass

    from cab import registry

    try:
        record = run_job(smoke_config("attention=linear", "task=mqar", "pattern=causal_self")
                         | {"attention": {"name": "self_only_runner_test"}})
    finally:
        registry._ATTENTIONS.entries.pop("self_only_runner_test")
    assert record["status"] == "unsupported" and record["reason"] == "looks ahead by design"
    assert record["error"] is None and validate(record) == []


def test_early_stopping_is_a_setting(smoke_config):
    record = run_job(smoke_config(*SMOKE, "trainer.early_stop_at=0.0", "trainer.eval_every=5"))
    assert record["status"] == "ok" and record["early_stopped_at_step"] == 5
    assert [h["step"] for h in record["eval_history"]] == [5]


def test_eval_every_records_the_learning_curve(smoke_config):
    record = run_job(smoke_config(*SMOKE, "trainer.steps=12", "trainer.eval_every=4"))
    assert record["status"] == "ok" and "early_stopped_at_step" not in record
    history = record["eval_history"]
    assert [h["step"] for h in history] == [4, 8]  # the final evaluation is `metrics`
    assert set(history[0]) == {"step", *record["metrics"]}
    assert validate(record) == []


@pytest.mark.parametrize("override, expected", [(None, 64), ("attention.max_len=96", 96)])
def test_length_bounded_attention_gets_the_tasks_length(smoke_config, override, expected):
    """Linformer's E and F are sized by max_len: the task's key length, not a 16,384 default that
    would put 8M unused parameters into every layer; the config still wins, and the record says."""
    config = smoke_config("attention=linformer", "task=mqar", "pattern=noncausal_self", "trainer.steps=2",
                          "task.seq_len=64", *([override] if override else []))
    record = run_job(config)
    assert record["status"] == "ok", record["error"]
    assert record["attention_info"]["hparams"]["max_len"] == expected
    assert record["attention_info"]["hparams"]["proj_len"] == 256  # defaults are recorded too
