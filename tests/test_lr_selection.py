"""Learning-rate selection on a validation split, the validation splits themselves, Informer-style
early stopping with the best checkpoint restored, and the short convolution of the MQAR backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cab.run.lr_selection import choose, select
from cab.run.runner import run_job

TINY_MQAR = ["task=mqar", "task.seq_len=32", "task.num_kv_pairs=4", "task.vocab_size=64", "task.train_examples=160",
             "task.validation_examples=40", "task.test_examples=40", "task.d_model=16", "trainer.steps=6",
             "trainer.batch_size=16"]


def _candidate(lr, status="ok", validation=None):
    return {"lr": lr, "status": status, "validation": validation}


def test_choose_takes_the_best_validation_value_and_the_smaller_rate_on_a_tie():
    cands = [_candidate(1e-3, validation=0.5), _candidate(3e-3, validation=0.9), _candidate(1e-2, validation=0.9)]
    assert choose(cands, "accuracy", higher_is_better=True)["lr"] == 3e-3
    assert choose(cands, "bpc", higher_is_better=False)["lr"] == 1e-3
    failed = [_candidate(1e-3, "timeout"), _candidate(3e-3, validation=float("nan"))]
    assert choose(failed, "accuracy", True) is None


def test_select_returns_the_chosen_run_with_every_candidate_listed():
    def train_at(config):
        lr = config["trainer"]["lr"]
        return {"status": "ok", "primary_metric": "accuracy", "metric_info": {"accuracy": {"higher_is_better": True}},
                "metrics": {"accuracy": 10 * lr}, "validation_metrics": {"accuracy": -abs(lr - 3e-3)},
                "cost": {"train_s": 1.0}, "seed": config["seed"]}

    config = {"seed": 2, "trainer": {"lr": "select", "lr_grid": [1e-3, 3e-3, 1e-2], "lr_select_seed": 0}}
    record = select(config, train_at)
    assert record["seed"] == 0  # the selecting seed trains, whatever seed asked
    assert record["lr_selection"]["chosen"] == 3e-3
    assert record["metrics"]["accuracy"] == pytest.approx(3e-2)  # the chosen run itself, not retrained
    assert [c["lr"] for c in record["lr_selection"]["candidates"]] == [1e-3, 3e-3, 1e-2]


def test_a_cell_selects_once_on_seed_0_and_other_seeds_train_at_its_choice(smoke_config, tmp_path):
    grid = ["trainer.lr=select", "trainer.lr_grid=[1e-3,3e-2]"]
    # seed 1 first: it must make seed 0's selection itself (any job order gives the same records)
    seed1 = run_job(smoke_config(*TINY_MQAR, *grid, "seed=1"))
    seed0 = run_job(smoke_config(*TINY_MQAR, *grid, "seed=0"))
    assert seed0.get("_skipped") is True  # made by seed 1's job, found and kept by seed 0's own job
    records = [json.loads(p.read_text()) for p in Path(tmp_path / "results").glob("*.json")]
    assert sorted(r["seed"] for r in records) == [0, 1]
    selecting = next(r for r in records if r["seed"] == 0)
    selection = selecting["lr_selection"]
    assert selection["split"] == "validation" and [c["lr"] for c in selection["candidates"]] == [1e-3, 3e-2]
    assert selection["chosen"] in (1e-3, 3e-2)
    best = max(selection["candidates"], key=lambda c: (c["validation"], -c["lr"]))
    assert selection["chosen"] == best["lr"]
    assert selecting["validation_metrics"]["accuracy"] == pytest.approx(best["validation"])
    assert seed1["lr_selection"] == {"chosen": selection["chosen"], "selected_by": selecting["run_id"]}
    assert seed1["config"]["trainer"]["lr"] == "select"  # the record keeps the cell's config
    again = run_job(smoke_config(*TINY_MQAR, *grid, "seed=1"))
    assert again.get("_skipped") is True  # resumable: nothing retrained


def test_a_cell_whose_every_rate_times_out_gives_its_other_seeds_that_status(smoke_config, tmp_path):
    grid = ["trainer.lr=select", "trainer.lr_grid=[1e-3,1e-2]", "debug.fail=timeout"]
    seed1 = run_job(smoke_config(*TINY_MQAR, *grid, "seed=1"))
    selecting = next(json.loads(p.read_text()) for p in Path(tmp_path / "results").glob("*.json")
                     if json.loads(p.read_text())["seed"] == 0)
    assert selecting["status"] == "timeout" and selecting["lr_selection"]["chosen"] is None
    assert seed1["status"] == "timeout" and seed1["error"]["type"] == "NoLearningRate"
    assert seed1["lr_selection"] == {"chosen": None, "selected_by": selecting["run_id"]}
    assert seed1["hardware"] == selecting["hardware"] and seed1["env"]["git_commit"] == selecting["env"]["git_commit"]


def test_an_unsupported_cell_records_its_reason_without_selecting(smoke_config):
    record = run_job(smoke_config(*TINY_MQAR, "trainer.lr=select", "trainer.lr_grid=[1e-3,1e-2]",
                                  "attention=perceiver", "pattern=causal_self", "seed=1"))
    assert record["status"] == "unsupported" and "lr_selection" not in record


def test_a_layer_that_cannot_be_built_makes_an_unsupported_cell_on_every_seed(smoke_config):
    """MoH routes among heads: in MQAR's one-head model it cannot exist. The selecting seed and the others record
    `unsupported` with the layer's reason, not a failure."""
    args = (*TINY_MQAR, "task.num_heads=1", "trainer.lr=select", "trainer.lr_grid=[1e-3,1e-2]", "attention=moh",
            "pattern=causal_self")
    selecting, other = run_job(smoke_config(*args, "seed=0")), run_job(smoke_config(*args, "seed=1"))
    for record in (selecting, other):
        assert record["status"] == "unsupported" and "routes among heads" in record["reason"], record
        assert record["error"] is None
    assert other["lr_selection"]["chosen"] is None


@pytest.mark.parametrize("task, params", [
    ("mqar", dict(seq_len=32, num_kv_pairs=4, vocab_size=64, train_examples=100, validation_examples=30, test_examples=20)),
    ("listops", dict(train_examples=60, validation_examples=20, test_examples=10, min_length=5, max_length=40)),
    ("gcog", dict(train_examples=50, validation_examples=10, test_examples=10)),
])
def test_validation_is_carved_from_the_training_examples(task, params):
    from cab.patterns import Pattern
    from cab.registry import task_spec

    spec = task_spec(task)
    made = spec.cls(pattern=next(iter(spec.patterns)), seed=0, **params)
    assert made.has_validation()
    train_n = sum(len(batch[-1]) for batch in made.train_batches(5))  # 5 divides every count here
    assert train_n == params["train_examples"] - params["validation_examples"]
    no_val = spec.cls(pattern=Pattern.NONCAUSAL_SELF, seed=0, **{**params, "validation_examples": 0})
    assert not no_val.has_validation()
    with pytest.raises(NotImplementedError, match="no validation split"):
        no_val.validate(None)


def test_mqar_validation_examples_are_not_trained_on():
    from cab.registry import task_spec
    from cab.patterns import Pattern

    task = task_spec("mqar").cls(pattern=Pattern.CAUSAL_SELF, seed=0, seq_len=32, num_kv_pairs=4, vocab_size=64,
                                 train_examples=100, validation_examples=30, test_examples=20)
    seen = {tuple(row.tolist()) for batch in task.train_batches(10) for row in batch[0]}
    held = {tuple(row.tolist()) for row in task.validation_data[0][0]}
    assert len(held) == 30 and not (seen & held)


def test_learning_curve_and_early_stopping_read_the_validation_split(smoke_config):
    record = run_job(smoke_config(*TINY_MQAR, "trainer.steps=8", "trainer.eval_every=2"))
    assert record["status"] == "ok" and record["eval_history_split"] == "validation"
    assert "validation_metrics" in record and set(record["validation_metrics"]) >= {"accuracy", "loss"}


def test_restore_best_evaluates_the_checkpoint_with_the_best_validation_value(smoke_config):
    record = run_job(smoke_config(*TINY_MQAR, "trainer.steps=12", "trainer.eval_every=1", "trainer.lr=3e-2",
                                  "trainer.restore_best=true", "trainer.early_stop_metric=loss"))
    assert record["status"] == "ok"
    seen = [h["loss"] for h in record["eval_history"]]
    final_val = record["validation_metrics"]["loss"]
    assert final_val <= min(seen) + 1e-6  # the restored weights are the best seen (or the last, if better)
    assert 1 <= record["restored_step"] <= 12


def test_patience_stops_when_validation_stops_improving(smoke_config):
    record = run_job(smoke_config(*TINY_MQAR, "trainer.steps=40", "trainer.eval_every=1", "trainer.lr=0.5",
                                  "trainer.early_stop_patience=2", "trainer.early_stop_metric=loss"))
    assert record["status"] == "ok"
    stopped = record["early_stopped_at_step"]
    losses = [h["loss"] for h in record["eval_history"]]
    assert stopped < 40 and len(losses) == stopped
    best_at = losses.index(min(losses))
    assert len(losses) - 1 - best_at == 2  # exactly `patience` evaluations after the best


def test_patience_needs_a_validation_split(smoke_config):
    record = run_job(smoke_config(*TINY_MQAR, "task.validation_examples=0", "trainer.early_stop_patience=2",
                                  "trainer.eval_every=2"))
    assert record["status"] == "failed" and "validation split" in record["error"]["message"]


@pytest.mark.parametrize("causal, reach", [(True, (0, 3)), (False, (-1, 2))])
def test_short_conv_window(causal, reach):
    """Causal: output i sees inputs i-3..i; centred (kernel 4): i-2..i+1. Perturb input t, see which move."""
    from cab.backbone import ShortConv

    torch.manual_seed(0)
    conv = ShortConv(8, 4, causal=causal).double()
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    t = 6
    moved = x.clone()
    moved[:, t] += 1.0
    changed = ((conv(moved) - conv(x)).abs().sum(-1) > 0)[0].nonzero().flatten().tolist()
    lo, hi = reach
    assert changed == list(range(t + lo, t + hi + 1))


def test_short_conv_ignores_padded_positions():
    from cab.backbone import ShortConv

    conv = ShortConv(4, 4, causal=False).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[:, 4:] = True
    noisy = x.clone()
    noisy[:, 4:] = 1e3
    assert torch.equal(conv(x, pad)[:, :4], conv(noisy, pad)[:, :4])


def test_mqar_cross_shares_one_token_table():
    from cab.patterns import Pattern
    from cab.registry import task_spec
    from cab.run.factory import AttentionFactory

    task = task_spec("mqar_cross").cls(pattern=Pattern.CAUSAL_CROSS, seed=0, seq_len=32, num_kv_pairs=4,
                                       vocab_size=64, train_examples=20, test_examples=10, d_model=16)
    model = task.build_model(AttentionFactory("softmax", Pattern.CAUSAL_CROSS, {}, lengths=task.longest_attention_lengths()))
    table = model.source_embed.tokens.weight
    assert model.target_embed.tokens.weight is table and model.head.weight is table
