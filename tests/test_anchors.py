"""benchmarks/anchors.py: the board against Zoology, CAB and gCOG, computed from records."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from leaderboard_fixture import train_record, write_records  # noqa: E402

spec = importlib.util.spec_from_file_location("anchors", ROOT / "benchmarks" / "anchors.py")
anchors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anchors)


def test_rank_correlations():
    assert anchors.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert anchors.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert anchors.kendall_tau([1, 2], [1, 2]) is None
    assert anchors.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert anchors.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert anchors.spearman([1, 1, 2, 3], [5, 6, 7, 8]) == pytest.approx(0.9487, abs=1e-4)  # ties: mean ranks
    assert anchors.spearman([1, 2, 3], [2, 2, 2]) is None


def _mqar(attention, accuracy, state, seeds=(0, 1, 2), pattern="causal_self"):
    return [train_record(attention, "mqar", pattern, seed=s, metrics={"accuracy": accuracy + 0.001 * s, "loss": 1.0},
                         state_size=state) for s in seeds]


def test_zoology_gap_and_state_correlation(tmp_path):
    records = (_mqar("softmax", 0.95, 32768) + _mqar("linear", 0.30, 8320) + _mqar("based", 0.70, 19584)
               + _mqar("mamba", 0.50, 4096) + _mqar("lightning", 0.94, 16384))
    text = anchors.report(str(write_records(records, tmp_path)), None)
    zoology = text.split("## 2.")[0]
    assert "### causal_self: column learnt" in zoology
    assert "| linear | 8,320 | 0.301 ± 0.001 (3) | -0.650 | 0.25 |" in zoology
    assert "4 mechanisms keep a smaller state. Within 0.05 of softmax: lightning; more than 0.05 below: 3." in zoology
    # state 4096 < 8320 < 16384 < 19584 against accuracy 0.50, 0.30, 0.94, 0.70: ranks (0,1,2,3) vs (1,0,3,2), ρ = 1 − 6·4/60
    assert "Spearman ρ(state size, accuracy) over those 4: 0.60" in zoology


def test_a_column_softmax_has_not_learnt_draws_no_conclusion(tmp_path):
    records = _mqar("softmax", 0.40, 32768) + _mqar("linear", 0.30, 8320)  # gate: 0.25 + margin 0.3
    text = anchors.report(str(write_records(records, tmp_path)), None)
    assert "column **not learnt**" in text and "no conclusion is drawn" in text
    assert "Spearman" not in text
    assert "No learnt column on this pattern: CAB's order cannot be tested here." in text


def test_gcog_check_reads_the_split_named_column(tmp_path):
    """gCOG's records name their split (`task_variant`), so the column is `gcog/distractor`: the check
    must find it there, and says the comparison stands only when softmax learnt both patterns."""
    gate = {"reference": "softmax", "metric": "accuracy/iid", "higher_is_better": True,
            "baselines": ["accuracy_chance"], "margin": 0.0, "floor": 0.8}
    records = []
    for pattern, iid, ood in (("noncausal_self", 0.90, 0.55), ("noncausal_cross", 0.95, 0.70)):
        for seed in range(3):
            r = train_record("softmax", "gcog", pattern, seed=seed, metrics={"accuracy": ood, "accuracy/iid": iid})
            r.update(task_variant="distractor", gate=gate, reference_metrics={"accuracy_chance": 0.333})
            records.append(r)
    text = anchors.report(str(write_records(records, tmp_path)), None).split("## 3.")[1]
    assert "| noncausal_self | gcog/distractor | learnt | 0.900 | 0.550 | 0.333 |" in text
    assert "| noncausal_cross | gcog/distractor | learnt | 0.950 | 0.700 | 0.333 |" in text
    assert "Both columns learnt: the comparison stands." in text
