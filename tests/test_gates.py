"""Reference gates (cab/gates.py): each task's gate, its verdict on every seed, and the end-of-sweep
summary that names no winner where softmax has not learnt the task. The leaderboard's use of the
verdicts (marker, aggregate) is tested in tests/test_leaderboard.py and, in a browser,
tests/test_leaderboard_browser.py."""

from __future__ import annotations

import pytest

from cab import list_tasks, task_spec
from cab.gates import GATES, Gate, judge
from cab.run.sweep import log_job, summarise

# Issue #17's targets, per task: the baselines a record holds, a value that clears the gate and one
# that misses it (in the gate's metric).
TARGETS = {
    "mqar": ({"accuracy_guess_a_context_value": 0.125}, 0.95, 0.85),  # softmax >= 0.90
    "mqar_cross": ({"accuracy_guess_a_context_value": 0.125}, 0.91, 0.89),
    "gcog": ({"accuracy_chance": 0.33, "accuracy_majority_class": 0.31}, 0.81, 0.79),  # accuracy/iid >= 0.80
    "listops": ({"accuracy_majority_class": 0.166, "accuracy_uniform_guess": 0.1}, 0.335, 0.325),  # >= 0.33
    "lm": ({"bpc_unigram": 4.85}, 3.80, 3.90),  # 1.0 bpc below the unigram
    "mlm": ({"bpc_unigram": 4.84, "accuracy_majority_char": 0.15}, 3.80, 3.90),
    "seq2seq": ({"bpc_unigram": 4.82, "accuracy_majority_char": 0.15}, 4.30, 4.40),  # 0.5 bpc below
    "lstf": ({"mse_repeat_last": 1.29, "mse_linear": 0.38, "mae_repeat_last": 0.7}, 1.20, 1.30),  # beats repeat-last
}


def runs(gate: Gate, values, baselines, statuses=None):
    statuses = statuses or ["ok"] * len(values)
    return [{"seed": seed, "status": status, "metrics": {gate.metric: v} if status == "ok" else {},
             "reference_metrics": dict(baselines)} for seed, (v, status) in enumerate(zip(values, statuses))]


def test_every_registered_task_has_a_gate_on_a_metric_it_reports():
    """The gate is task metadata: each registered task reaches its own (the built-in ones from
    cab/gates.py), on a metric it describes, in that metric's direction, softmax as reference."""
    assert set(list_tasks()) == set(GATES) == set(TARGETS)
    for name in list_tasks():
        cls = task_spec(name).cls
        gate = cls.reference_gate()
        assert gate is GATES[name] and gate.reference == "softmax"
        assert gate.metric in cls.metric_info, name
        assert cls.metric_info[gate.metric].higher_is_better is gate.higher_is_better, name
        assert gate.baselines, name  # always judged against a trivial baseline, never a floor alone
        assert Gate.from_dict(gate.as_dict()) == gate


def test_the_gates_are_the_issues_targets():
    assert GATES["mqar"].floor == GATES["mqar_cross"].floor == 0.90
    assert GATES["gcog"].metric == "accuracy/iid" and GATES["gcog"].floor == 0.80
    assert GATES["listops"].floor == 0.33
    assert GATES["lm"].margin == GATES["mlm"].margin == 1.0 and GATES["seq2seq"].margin == 0.5
    assert GATES["lstf"].baselines == ("mse_repeat_last",) and GATES["lstf"].margin == 0  # linear is not trivial


@pytest.mark.parametrize("task", sorted(TARGETS))
def test_gate_verdicts(task):
    gate = GATES[task]
    baselines, good, bad = TARGETS[task]
    learnt = judge(gate, runs(gate, [good] * 3, baselines))
    assert learnt["status"] == "learnt" and learnt["n"] == 3, learnt
    assert learnt["reason"].startswith(f"softmax {gate.metric} ") and "all pass" in learnt["reason"]
    one_fails = judge(gate, runs(gate, [good, bad, good], baselines))
    assert one_fails["status"] == "not_learnt" and "2 of 3 pass" in one_fails["reason"] and "seed 1" in one_fails["reason"]
    assert [s["passed"] for s in one_fails["seeds"]] == [True, False, True]
    # a seed that did not finish has not cleared the gate either
    timed_out = judge(gate, runs(gate, [good, good, good], baselines, ["ok", "ok", "timeout"]))
    assert timed_out["status"] == "not_learnt" and "seed 2: timeout" in timed_out["reason"]
    none = judge(gate, [])
    assert none["status"] == "unknown" and "no softmax records" in none["reason"]


def test_margin_zero_means_strictly_better_and_floors_bind():
    lstf = GATES["lstf"]
    assert judge(lstf, runs(lstf, [1.29], {"mse_repeat_last": 1.29}))["status"] == "not_learnt"  # a tie is no win
    # worse than the linear model, better than repeat-last: learnt (the linear model is a finding, not a bar)
    assert judge(lstf, runs(lstf, [1.0], {"mse_repeat_last": 1.29, "mse_linear": 0.38}))["status"] == "learnt"
    mqar = GATES["mqar"]
    v = judge(mqar, runs(mqar, [0.5, 0.6], {"accuracy_guess_a_context_value": 0.125}))
    assert v["status"] == "not_learnt" and "needs ≥ 0.900" in v["reason"] and "guess a context value 0.125" in v["reason"]
    # the best of several baselines sets the bar; a baseline that varies by seed is judged per seed
    gate = Gate("accuracy", True, ("a_x", "a_y"), margin=0.1)
    per_seed = [{"seed": 0, "status": "ok", "metrics": {"accuracy": 0.45}, "reference_metrics": {"a_x": 0.3, "a_y": 0.34}},
                {"seed": 1, "status": "ok", "metrics": {"accuracy": 0.45}, "reference_metrics": {"a_x": 0.36, "a_y": 0.2}}]
    v = judge(gate, per_seed)
    assert [s["bar"] for s in v["seeds"]] == [pytest.approx(0.44), pytest.approx(0.46)]
    assert v["status"] == "not_learnt" and "seed 1: 0.450" in v["reason"]


def test_unknown_verdicts_say_why():
    gate = GATES["lm"]
    assert judge(None, [])["status"] == "unknown"
    assert "do not report bpc" in judge(gate, [{"seed": 0, "status": "ok", "metrics": {"perplexity": 3.0}}])["reason"]
    assert "none of the gate's baselines" in judge(gate, runs(gate, [3.0], {}))["reason"]
    assert "unsupported" in judge(gate, [{"seed": 0, "status": "unsupported"}])["reason"]
    v = judge(gate, runs(gate, [3.0, 3.0], {"bpc_unigram": 4.8}, ["failed", "oom"]))
    assert v["status"] == "not_learnt" and "no softmax seed finished" in v["reason"]


@pytest.mark.parametrize("bad", [
    {"metric": "accuracy", "higher_is_better": True},  # no baseline and no floor: nothing to clear
    {"metric": "accuracy", "higher_is_better": "yes", "floor": 0.9},
    {"metric": "accuracy", "higher_is_better": True, "baselines": "accuracy_chance"},
    {"metric": "accuracy", "higher_is_better": True, "baselines": ["a"], "margin": -1},
    {"metric": "accuracy", "higher_is_better": True, "floor": float("nan")},
    {"metric": "", "higher_is_better": True, "floor": 0.9},
    {"metric": "accuracy", "higher_is_better": True, "floor": 0.9, "threshold": 1},
    ["accuracy"],
])
def test_a_malformed_gate_is_refused(bad):
    with pytest.raises((TypeError, ValueError)):
        Gate.from_dict(bad)


def _record(attention, seed, value, task="mqar", status="ok", gate=True):
    g = GATES[task]
    return {"run_id": f"{attention}-{seed}", "status": status, "attention": attention, "task": task, "pattern": "causal_self",
            "seed": seed, "primary_metric": g.metric, "metrics": {g.metric: value} if status == "ok" else {},
            "metric_info": {g.metric: {"higher_is_better": g.higher_is_better}},
            "reference_metrics": {"accuracy_guess_a_context_value": 0.125, "bpc_unigram": 4.85},
            **({"gate": g.as_dict()} if gate else {})}


def test_sweep_summary_names_no_winner_where_softmax_has_not_learnt(tmp_path):
    for seed in range(3):
        for attention, value in (("softmax", 0.07), ("linear", 0.09)):
            log_job(tmp_path, _record(attention, seed, value))
        for attention, value in (("softmax", 3.7), ("linear", 4.0)):
            log_job(tmp_path, _record(attention, seed, value, task="lm", gate=seed != 1))  # an old line has no gate
    counts, best = summarise(tmp_path)
    assert counts["ok"] == 12
    mqar = best[("mqar", "causal_self")]
    assert mqar["attention"] is None and mqar["best_attention"] == "linear"  # the leader in noise is not "best"
    assert mqar["gate"]["status"] == "not_learnt" and "needs ≥ 0.900" in mqar["gate"]["reason"]
    lm = best[("lm", "causal_self")]
    assert lm["attention"] == "softmax" and lm["gate"]["status"] == "learnt"


def test_sweep_summary_without_the_reference_gives_no_verdict(tmp_path):
    for seed in range(2):
        log_job(tmp_path, _record("linear", seed, 0.95))
    _, best = summarise(tmp_path)
    entry = best[("mqar", "causal_self")]
    assert entry["attention"] == "linear" and entry["gate"]["status"] == "unknown"
