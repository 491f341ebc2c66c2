"""Sequence parallelism (cab/distributed): every strategy equals the single-process layer.

For every registered attention, every strategy that `cab.distributed.strategies_for` says distributes it
and every pattern it supports, one group of 2 and one of 4 processes (spawned once per world size, gloo
on 127.0.0.1) checks in float64 that the distributed layer's output, input gradients and (summed)
parameter gradients equal the single-process layer's, with padding that differs per row and crosses
the slice boundaries, and that each rank sent exactly the bytes of the strategy's formula.
A newly registered attention that a strategy accepts is tested here with no new code.
"""

from __future__ import annotations

import pytest
import torch

from cab import Pattern, build_attention, list_attentions
from cab.distributed import STRATEGIES, strategies_for, why_not
from cab.distributed.check import Case, run_cases
from cab.distributed.cost import bytes_per_process
from cab.registry import ChoiceError, attention_spec, with_length_bound

WORLD_SIZES = (2, 4)
TOLERANCE = 1e-9  # relative, float64: the strategies reorder sums, nothing else
# Based's default window (64) is longer than a rank's slice of the test sequence (32/4 = 8 positions);
# a window of 8 makes the halo a whole neighbouring slice at world size 4
TEST_HPARAMS = {"based": (("window", 8),)}


def _cases() -> list[Case]:
    cases = []
    for name in list_attentions():
        for strategy in strategies_for(name):
            for pattern in Pattern:
                if pattern in attention_spec(name).patterns:
                    cases.append(Case(name, strategy, pattern.value, hparams=TEST_HPARAMS.get(name, ())))
    return cases


CASES = _cases()
# other forms: the training cell's (the whole sequence in and out on every rank, the layer split inside), and
# ring with its blocks computed in chunks of queries
VARIANTS = [Case("softmax", "ring", "causal_self", inputs="replicated"),
            Case("performer", "lasp", "causal_self", inputs="replicated"),
            Case("lightning", "ulysses", "noncausal_cross", inputs="replicated"),
            Case("vanilla", "ring", "causal_self", query_chunk=3)]  # 3 does not divide L/P: a short last chunk
# inputs a strategy must refuse, inside a group: (case, world size, words of the expected one-line error)
REFUSED = [
    (Case("softmax", "ulysses", "noncausal_self", num_heads=2), 4, "num_heads=2 is not divisible by world_size=4"),
    (Case("based", "lasp", "causal_self"), 2,
     "the sliding window reaches 64 positions, more than a rank's slice of 16"),
]


@pytest.fixture(scope="module")
def outcomes():
    """{world size: {case id: Outcome}}: one group per world size, every case inside it."""
    got = {}
    for size in WORLD_SIZES:
        cases = CASES + VARIANTS + [case for case, at, _ in REFUSED if at == size]
        got[size] = run_cases(cases, size, tolerance=TOLERANCE, timeout_s=300)
    return got


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES + VARIANTS, ids=lambda c: c.id)
def test_equals_single_process(outcomes, case, world_size):
    out = outcomes[world_size][case.id]
    assert out.error is None, out.error
    assert out.ok, f"{case.id} at {world_size} ranks: output {out.output:.2e}, input grads {out.input_grad:.2e}, " \
                   f"parameter grads {out.param_grad:.2e} (tolerance {TOLERANCE:g})"


@pytest.mark.parametrize("world_size", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bytes_sent_follow_the_formula(outcomes, case, world_size):
    """What comm.py counted on each rank is what cost.py's formula says, forward and backward."""
    out = outcomes[world_size][case.id]
    assert out.error is None, out.error
    hparams = with_length_bound(case.attention, dict(case.hparams), max(case.length, case.source_length))
    layer = build_attention(case.attention, dim=case.dim, num_heads=case.num_heads, pattern=case.pattern, **hparams)
    len_k = case.source_length if Pattern.parse(case.pattern).is_cross else case.length
    for backward, key in ((False, "bytes_forward"), (True, "bytes_backward")):
        want = bytes_per_process(case.strategy, case.attention, layer, case.batch, case.length, len_k, world_size,
                                 element_bytes=8, padded=True, backward=backward)
        assert {r[key] for r in out.ranks} == {want}, f"{key}: counted {[r[key] for r in out.ranks]}, formula {want}"


@pytest.mark.parametrize("case,world_size,message", REFUSED, ids=lambda v: getattr(v, "id", str(v)))
def test_impossible_inputs_are_one_line_errors(outcomes, case, world_size, message):
    out = outcomes[world_size][case.id]
    assert out.error is not None and message in out.error.splitlines()[0], out.error


# ---------------------------------------------------------------------------------------------
# which mechanism distributes by which strategy


def test_anchor_mechanisms_distribute_as_their_papers_say():
    assert strategies_for("softmax") == ("ring", "ulysses")
    assert strategies_for("vanilla") == ("ring", "ulysses")
    for name in ("linear", "lightning", "performer"):
        assert strategies_for(name) == ("ulysses", "lasp"), name
    assert strategies_for("based") == ("lasp",)  # its own forward: not a per-head attend
    assert strategies_for("mamba") == ()
    assert strategies_for("softmax", "causal_cross") == ("ring", "ulysses")
    assert strategies_for("local", "noncausal_cross") == ()  # local lacks the pattern itself


def test_every_refusal_says_why():
    for name in list_attentions():
        for strategy in STRATEGIES:
            reason = why_not(name, strategy)
            assert reason is None or (reason and "\n" not in reason), (name, strategy, reason)
        assert why_not(name, "ulysses") is None or "heads" in why_not(name, "ulysses")


def test_unsupported_combinations_are_one_line_errors_naming_what_is_supported():
    from cab.distributed import SequenceParallel

    layer = build_attention("linear", dim=32, num_heads=4, pattern="causal_self")
    with pytest.raises(ChoiceError) as err:
        SequenceParallel(layer, "ring")
    msg = str(err.value)
    assert "\n" not in msg and "not exact softmax attention" in msg and "strategies for linear: ulysses, lasp" in msg
    assert "ring distributes: flash, softmax, vanilla" in msg
    with pytest.raises(ChoiceError, match=r"unknown distributed strategy 'zigzag'; valid: ring, ulysses, lasp"):
        SequenceParallel(layer, "zigzag")
    with pytest.raises(ValueError, match="attention dropout"):
        SequenceParallel(build_attention("softmax", dim=32, num_heads=4, pattern="causal_self", dropout=0.1), "ring")


def test_one_process_needs_no_group():
    """Without an initialised group every strategy is the layer itself (world size 1)."""
    from cab.distributed import SequenceParallel

    torch.manual_seed(0)
    x = torch.randn(2, 12, 32, dtype=torch.float64)
    for name, strategy in (("softmax", "ring"), ("performer", "lasp"), ("lightning", "ulysses")):
        layer = build_attention(name, dim=32, num_heads=4, pattern="causal_self").double().eval()
        torch.testing.assert_close(SequenceParallel(layer, strategy)(x), layer(x), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# the configs and `cab bench`


@pytest.mark.parametrize("app,overrides,words", [
    ("bench", ["attention=linear", "distributed.strategy=ring"],
     ["distributed.strategy=ring", "not exact softmax attention", "strategies for linear: ulysses, lasp"]),
    ("bench", ["distributed.strategy=zigzag"], ["distributed.strategy=zigzag", "ring, ulysses, lasp"]),
    ("bench", ["distributed.strategy=ulysses", "distributed.world_size=3"],
     ["distributed.world_size=3", "num_heads=8 is not divisible"]),
    ("bench", ["distributed.world_size=2"], ["distributed.world_size=2", "needs a distributed.strategy"]),
    ("bench", ["distributed.strategy=ring", "distributed.world_size=4", "lengths=[1022]"],
     ["lengths=[1022]", "divisible by distributed.world_size=4"]),
    ("bench", ["distributed.strategy=ring", "distributed.world_size=0"], ["distributed.world_size=0", ">= 1"]),
    ("run", ["trainer=smoke", "distributed.strategy=ring", "distributed.world_size=2"],
     ["distributed.world_size=2", "torchrun --nproc-per-node 2"]),
])
def test_bad_distributed_settings_stop_before_any_job(tmp_path, monkeypatch, app, overrides, words):
    from cab.config import check_overrides, register_configs

    register_configs()
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # not under a launcher
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ChoiceError) as err:
        check_overrides([*overrides, f"results_dir={tmp_path}"], multirun=False, app=app)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_one_process_configs_keep_their_run_ids():
    """The `distributed` node with no strategy is the default: the run_id of a one-process job is the one
    it had before the node existed (published records stay found on a rerun)."""
    from cab.results.records import run_id_of

    base = {"attention": {"name": "softmax"}, "pattern": "causal_self", "seed": 0}
    one = {**base, "distributed": {"strategy": None, "world_size": 1, "backend": "auto", "query_chunk": None}}
    ring = {**base, "distributed": {**one["distributed"], "strategy": "ring", "world_size": 2}}
    assert run_id_of(one) == run_id_of(base) != run_id_of(ring)


def test_bench_records_a_distributed_point(tmp_path):
    """One point at world size 2 through `run_bench`: a fresh group of two processes; the record carries the
    world size and strategy, per-rank memory, and the bytes each rank sent equal the formula."""
    from cab.bench.job import run_bench

    config = {
        "attention": {"name": "linear"}, "pattern": "causal_self", "scale": "test", "device": "cpu",
        "dtype": "float32", "batch": 1, "num_heads": 2, "dim": 16, "threads": 1, "lengths": [128], "warmup": 1,
        "repeats": 2, "min_repeats": 1, "max_seconds_per_point": None, "point_timeout_s": 120,
        "memory_limit_gb": None, "directions": ["forward"], "seed": 0, "results_dir": str(tmp_path), "force": False,
        "imports": [], "lock": None, "isolate": "auto",
        "distributed": {"strategy": "lasp", "world_size": 2, "backend": "auto", "query_chunk": None},
    }
    (record,) = run_bench(config, log=lambda line: None)
    assert record["status"] == "ok", record["error"]
    eff = record["efficiency"]
    assert (eff["world_size"], eff["strategy"], eff["distributed"]["backend"]) == (2, "lasp", "gloo")
    (point,) = eff["points"]
    assert point["status"] == "ok" and len(point["peak_memory_bytes_per_rank"]) == 2
    assert point["peak_memory_bytes"] == max(point["peak_memory_bytes_per_rank"])
    # causal linear: all-gather of one state per rank, B·H·Dh·(Dh + 1) float32 numbers
    assert point["bytes_sent_per_rank"] == [point["bytes_formula"]] * 2 == [1 * 2 * 8 * 9 * 4] * 2
    assert (tmp_path / f"{record['run_id']}.json").exists()
