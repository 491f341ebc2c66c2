"""One failure classifier for `cab run` and `cab bench` (cab/results/status.py): the same exception,
raised by an attention layer, ends with the same status in a training record, in a bench point and
in a bench record. Before there was one, the CPU allocator's out-of-memory error was `oom` under
`cab bench` and `failed` under `cab run`."""

from __future__ import annotations

import pytest
import torch

from cab import MultiHeadAttention, Pattern, register_attention, registry
from cab.bench.job import run_bench
from cab.bench.measure import measure_point
from cab.results.records import validate
from cab.results.status import JobTimeout, NaNLoss, classify, error_info
from cab.run.runner import run_job

CPU_ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 34359738368 bytes. Error code 12 (Cannot allocate memory)")
CASES = [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"), "oom"),
    (RuntimeError(CPU_ALLOCATOR), "oom"),
    (MemoryError(), "oom"),
    (JobTimeout("job exceeded its time limit of 1 s"), "timeout"),
    (NaNLoss("loss became nan at step 3"), "nan"),
    (RuntimeError("shape mismatch"), "failed"),
    (ValueError("bad shape"), "failed"),
]
IDS = ["torch-oom", "cpu-allocator", "memory-error", "timeout", "nan", "runtime-error", "value-error"]
RAISER = "status_test_raiser"


@pytest.mark.parametrize("exc,status", CASES, ids=IDS)
def test_classify(exc, status):
    assert classify(exc) == status


def test_error_info_keeps_the_first_line_and_the_traceback():
    try:
        raise RuntimeError(CPU_ALLOCATOR + "\nsecond line")
    except RuntimeError as exc:
        error = error_info(exc)
    assert error["type"] == "RuntimeError" and error["message"] == CPU_ALLOCATOR
    assert error["traceback"].startswith("Traceback") and "second line" in error["traceback"]


@pytest.fixture
def raiser():
    """An attention whose forward raises `raiser[0]`; unregistered afterwards, so the contract tests never see it."""
    to_raise: list[BaseException] = [RuntimeError("unset")]

    @register_attention(RAISER, patterns=set(Pattern))
    class Raiser(MultiHeadAttention):
        """Test double."""

        def attend(self, q, k, v, key_padding_mask):
            raise to_raise[0]

        def core_flops(self, batch, len_q, len_k):
            return 0

    try:
        yield to_raise
    finally:
        registry._ATTENTIONS.entries.pop(RAISER, None)


@pytest.mark.parametrize("exc,status", CASES, ids=IDS)
def test_run_and_bench_give_the_same_status(raiser, smoke_config, tmp_path, exc, status):
    raiser[0] = exc
    config = smoke_config("attention=linear", "task=mqar", "pattern=causal_self", "trainer.steps=2")
    trained = run_job({**config, "attention": {"name": RAISER}})
    assert trained["status"] == status and validate(trained) == []

    point = measure_point(RAISER, "causal_self", 16, dim=16, num_heads=2, warmup=0, repeats=1)
    assert point.status == status, point.error

    def measure(*args):  # the job itself raising, not one point: the record's status
        raise exc

    bench_config = {"attention": {"name": RAISER}, "pattern": "causal_self", "lengths": [16], "batch": 1, "dim": 16,
                    "num_heads": 2, "warmup": 0, "repeats": 1, "device": "cpu", "seed": 0, "scale": "test",
                    "results_dir": str(tmp_path / "bench"), "lock": None, "directions": ["forward"]}
    [benched] = run_bench(bench_config, measure, log=lambda line: None)
    assert benched["status"] == status and benched["error"]["type"] == type(exc).__name__
    assert validate(benched) == []
