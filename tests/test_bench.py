"""`cab bench` and cab/bench/measure.py: the timing harness, memory, OOM capture, derived figures,
records and the command line. Measurements that need a real process use short lengths."""

from __future__ import annotations

import fcntl
import json
import math
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cab.bench import job as bench_job
from cab.bench import measure as bench_measure
from cab.bench import report as bench_report
from cab.bench.measure import Point, measure_point, measure_point_isolated, median_iqr, time_samples
from cab.bench.scaling import cab_fit_length, crossing_length, efficiency_lengths, scaling_exponent
from cab.results.records import REQUIRED, validate
from cab.results.status import classify


@pytest.fixture(autouse=True)
def _keep_threads():
    """Bench configs fix torch's thread count; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# timing harness


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_warmup_calls_are_untimed_and_repeats_are_counted(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench_measure, "_clock", clock)
    durations = iter([5.0, 5.0, 5.0] + [0.1, 0.2, 0.3, 0.4, 0.5])  # 3 slow warm-ups, then 5 timed

    def fn():
        clock.now += next(durations)

    samples = time_samples(fn, "cpu", warmup=3, repeats=5)
    assert samples == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_max_seconds_stops_after_min_repeats(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench_measure, "_clock", clock)
    calls = []

    def fn():
        calls.append(1)
        clock.now += 10.0

    samples = time_samples(fn, "cpu", warmup=1, repeats=20, max_seconds=15.0, min_repeats=3)
    assert len(samples) == 3 and len(calls) == 4  # stop after 3 samples (30 s >= 15 s), not 20


def test_median_and_interquartile_range():
    assert median_iqr([5.0, 1.0, 4.0, 2.0, 3.0]) == (3.0, 2.0)  # Q1 = 2, Q3 = 4
    assert median_iqr([1.0, 3.0, 5.0]) == (3.0, 2.0)
    median, iqr = median_iqr([1.0, 2.0, 3.0, 10.0])  # numpy.percentile: Q1 1.75, Q3 4.75
    assert median == 2.5 and iqr == pytest.approx(3.0)
    assert median_iqr([0.7]) == (0.7, 0.0)


def test_cuda_timing_waits_for_the_device(monkeypatch):
    """A call that only launches work (0.1 s) on a device that needs 1 s more to finish: a
    synchronised sample is 1.1 s; without the synchronisation it would read 0.1 s."""
    clock = FakeClock()
    monkeypatch.setattr(bench_measure, "_clock", clock)
    pending = {"work": 0.0}
    syncs = []

    def launch():
        clock.now += 0.1
        pending["work"] += 1.0

    def synchronize(*args):
        syncs.append(clock.now)
        clock.now += pending["work"]
        pending["work"] = 0.0

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    samples = time_samples(launch, "cuda", warmup=2, repeats=4)
    assert samples == pytest.approx([1.1] * 4)
    assert len(syncs) >= 8  # before and after every timed call
    syncs.clear()
    assert time_samples(launch, "cpu", warmup=0, repeats=2) == pytest.approx([0.1, 0.1]) and not syncs


# ---------------------------------------------------------------------------------------------
# out of memory


class _ExplodingLayer(torch.nn.Module):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc
        self.w = torch.nn.Parameter(torch.zeros(1))

    def flops(self, b, lq, lk):
        return 1

    def forward(self, x, context=None):
        raise self.exc


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes"),
    MemoryError(),
])
def test_out_of_memory_is_an_oom_point(monkeypatch, exc):
    monkeypatch.setattr(bench_measure, "build_attention", lambda *a, **k: _ExplodingLayer(exc))
    point = measure_point("softmax", "causal_self", 64, dim=16, num_heads=2, warmup=0, repeats=1)
    assert point.status == "oom" and point.error


def test_length_bounded_attention_is_built_for_the_points_length(monkeypatch):
    """Linformer's E and F are sized to the sequence, as its paper trains it: a bench point past the
    class default of 16,384 runs instead of failing, and an explicit max_len still wins."""
    built = []
    real_build = bench_measure.build_attention
    monkeypatch.setattr(bench_measure, "build_attention", lambda *a, **k: built.append(k.get("max_len")) or real_build(*a, **k))
    point = measure_point("linformer", "noncausal_self", 16448, dim=8, num_heads=1, warmup=0, repeats=1,
                          hparams={"proj_len": 4, "max_len": None}, measure_memory=False)
    assert point.status == "ok", point.error
    point = measure_point("linformer", "noncausal_self", 64, dim=8, num_heads=1, warmup=0, repeats=1,
                          hparams={"proj_len": 4, "max_len": 32}, measure_memory=False)
    assert point.status == "failed" and "exceeds max_len 32" in point.error
    assert built == [16448, 32]


def test_other_errors_are_failed_points(monkeypatch):
    monkeypatch.setattr(bench_measure, "build_attention", lambda *a, **k: _ExplodingLayer(ValueError("bad shape")))
    point = measure_point("softmax", "causal_self", 64, dim=16, num_heads=2, warmup=0, repeats=1)
    assert point.status == "failed" and "bad shape" in point.error
    assert classify(RuntimeError("shape mismatch")) == "failed"


@pytest.mark.slow  # fresh processes (a few seconds each)
def test_isolated_point_killed_by_the_kernel_is_oom(tmp_path, monkeypatch):
    """The OOM killer's SIGKILL, simulated by an attention that kills its own process."""
    (tmp_path / "cab_test_killer.py").write_text(textwrap.dedent("""
        import os, signal
        from cab import MultiHeadAttention, Pattern, register_attention

        @register_attention("cab_test_killer", patterns=set(Pattern))
        class Killer(MultiHeadAttention):
            def attend(self, q, k, v, mask):
                os.kill(os.getpid(), signal.SIGKILL)

            def core_flops(self, b, lq, lk):
                return 0
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    point = measure_point_isolated(attention="cab_test_killer", pattern="causal_self", length=64, dim=16, num_heads=2,
                                   imports=["cab_test_killer"], warmup=0, repeats=1)
    assert point.status == "oom" and str(-signal.SIGKILL) in point.error


@pytest.mark.slow  # fresh processes (a few seconds each)
def test_isolated_point_past_the_memory_limit_is_oom():
    """A real allocation refused: vanilla at L=8192 needs 2 GiB per score matrix; limit 1.5 GiB."""
    point = measure_point_isolated(attention="vanilla", pattern="noncausal_self", length=8192, dim=64, num_heads=8,
                                   warmup=0, repeats=1, threads=1, memory_limit_bytes=int(1.5 * 2**30))
    assert point.status == "oom", point


def test_isolated_point_past_its_time_is_timeout():
    point = measure_point_isolated(timeout_s=0.5, attention="softmax", pattern="causal_self", length=64, dim=16,
                                   num_heads=2)
    assert point.status == "timeout"


# ---------------------------------------------------------------------------------------------
# CPU memory is a real measurement


_FAULTS_SCRIPT = """
import json, resource, torch
from cab.bench.measure import held_heap

def faults_of_a_second_big_tensor():
    # 65 MiB, freed at once: the block a warm-up call leaves for the timed call (a little larger,
    # as glibc's aligned allocation asks for a few bytes more than the 64 MiB that follow)
    torch.empty(2**24 + 2**18).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(2**24).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults_of_a_second_big_tensor()
with held_heap("cpu") as method:
    held = faults_of_a_second_big_tensor() if method else None
with held_heap("cuda") as cuda_method:
    pass
print(json.dumps({"default": default, "held": held, "cuda": cuda_method}))
"""


def test_timed_calls_reuse_freed_memory_instead_of_faulting_it_in_again():
    """glibc maps every block of 32 MiB or more afresh; inside held_heap a freed block is reused, so
    a 64 MiB tensor allocated where a 65 MiB one was freed costs no page faults (16,384 of them with
    glibc's defaults). In a fresh process, as `cab bench` takes every CPU point."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True)
    faults = json.loads(out.stdout.strip().splitlines()[-1])
    if faults["held"] is None:
        pytest.skip("not glibc")
    assert faults["held"] < 1_000 < 10_000 < faults["default"], faults
    assert faults["cuda"] is None  # the CUDA caching allocator already reuses memory


@pytest.mark.slow  # fresh processes (a few seconds each)
def test_cpu_memory_shows_vanillas_quadratic_growth_and_linears_linear_growth():
    def mem(name, length):
        p = measure_point_isolated(attention=name, pattern="noncausal_self", length=length, dim=64, num_heads=8,
                                   warmup=0, repeats=1, threads=1)
        assert p.status == "ok", p
        return p.peak_memory_bytes

    # vanilla materialises (B, H, L, L) scores and probabilities: 2 × 8·L²·4 bytes
    v1, v2 = mem("vanilla", 1024), mem("vanilla", 2048)
    assert v2 >= 2 * 8 * 2048**2 * 4 * 0.9
    assert 1.7 <= math.log2(v2 / v1) <= 2.2
    l1, l2 = mem("linear", 4096), mem("linear", 8192)
    assert 0.7 <= math.log2(l2 / l1) <= 1.2


# ---------------------------------------------------------------------------------------------
# derived figures on synthetic curves with known answers

LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]


def curve(f, key="time_median_s", lengths=LENGTHS):
    return [{"length": n, "status": "ok", key: f(n)} for n in lengths]


def test_scaling_exponent_of_power_laws():
    k, used = scaling_exponent(curve(lambda n: 3e-9 * n**2), "time_median_s")
    assert k == pytest.approx(2.0) and used == [4096, 8192, 16384]
    k, _ = scaling_exponent(curve(lambda n: 1e-3 + 1e-6 * n), "time_median_s")  # a fixed overhead lowers it
    assert 0.85 < k < 0.9  # log(0.017384 / 0.005096) / log(4) = 0.885
    points = curve(lambda n: 1e-6 * n**1.5) + [{"length": 32768, "status": "oom", "time_median_s": None}]
    k, used = scaling_exponent(points, "time_median_s")
    assert k == pytest.approx(1.5) and used[-1] == 16384  # the oom point is not a point of the curve
    assert scaling_exponent(curve(lambda n: 1.0)[:1], "time_median_s") == (None, [256])


def test_efficiency_lengths_where_both_definitions_are_exact():
    """baseline L², method 3000·L: the fits are exact and the log-ratio is linear in log L, so both
    the CAB fit and the interpolated crossing are exactly 3000."""
    out = efficiency_lengths(curve(lambda n: 3000.0 * n), curve(lambda n: float(n * n)), "time_median_s")
    assert out["cab_fit"] == pytest.approx(3000.0)
    assert out["crossing"] == pytest.approx(3000.0)
    assert set(out) == {"cab_fit", "crossing"}


def test_cab_fit_with_offsets():
    """baseline L²/1000, method 2L + 1000: L²/1000 − 2L − 1000 = 0 -> L = 1000 + 1000·√2."""
    key = "peak_memory_bytes"
    fit = cab_fit_length(curve(lambda n: 2 * n + 1000, key), curve(lambda n: n * n / 1000, key), key)
    assert fit == pytest.approx(1000 + 1000 * math.sqrt(2))


def test_cab_fit_reproduces_cabs_published_abc_figures():
    """CAB's cost.xlsx (A100, vanilla vs ABC) through CAB's procedure gives its README figures:
    time 1,877 (method's 256 point left out) and memory 70 (/work/shared/reference/cab_lra.md §1.5)."""
    lengths = [256, 512, 1024, 2048, 4096, 8192]
    pts = lambda ys, key: [{"length": n, "status": "ok", key: y} for n, y in zip(lengths, ys)]  # noqa: E731
    v_time, abc_time = [0.472, 0.628, 0.721, 0.981, 3.670, 18.437], [0.648, 0.590, 0.602, 0.910, 1.006, 1.509]
    v_mem, abc_mem = [81, 265, 952, 3604, 14020, 55300], [42, 80, 156, 308, 612, 1220]
    t = cab_fit_length(pts(abc_time, "t"), pts(v_time, "t"), "t", drop_shortest_method=True)
    m = cab_fit_length(pts(abc_mem, "m"), pts(v_mem, "m"), "m")
    assert round(t) == 1877 and round(m) == 70


def test_crossing_edge_cases():
    key = "time_median_s"
    base = curve(lambda n: float(n * n))
    assert crossing_length(curve(lambda n: 0.5 * n * n), base, key) == (None, "below")
    assert crossing_length(curve(lambda n: 2.0 * n * n), base, key) == (None, "above")
    # noisy: cheaper at 512, dearer at 1024, cheaper from 2048 on -> the last crossing counts
    noisy = {256: 2.0, 512: 0.5, 1024: 1.5}
    method = curve(lambda n: noisy.get(n, 0.5) * n * n)
    length, note = crossing_length(method, base, key)
    assert note == "crossed" and 1024 < length < 2048
    # only ok points of both curves count
    method = curve(lambda n: 3000.0 * n)
    method[-1]["status"] = "oom"
    assert efficiency_lengths(method, base, key)["crossing"] == pytest.approx(3000.0)
    assert efficiency_lengths([], base, key) == {"cab_fit": None, "crossing": None}
    with pytest.raises(ValueError):
        efficiency_lengths(method, base, "flops")


def test_cab_fit_none_when_the_fits_never_meet():
    key = "time_median_s"  # method always far below a steep quadratic: a root at L > 0 still exists;
    # a method above a *concave* baseline everywhere has none
    concave = curve(lambda n: -1e-9 * n * n + n)
    assert cab_fit_length(curve(lambda n: 10.0 * n + 1e6), concave, key) is None


def test_cab_fit_needs_a_quadratic_baseline():
    key = "peak_memory_bytes"  # SDPA's memory is linear: CAB's quadratic fit of it means nothing
    sdpa_like = curve(lambda n: 1000.0 * n + 1e-6 * n * n, key)  # exponent ~1.0 over the top lengths
    assert cab_fit_length(curve(lambda n: 4000.0 * n, key), sdpa_like, key) is None
    vanilla_like = curve(lambda n: 8.0 * n * n, key)
    assert cab_fit_length(curve(lambda n: 4000.0 * n, key), vanilla_like, key) == pytest.approx(500)


# ---------------------------------------------------------------------------------------------
# the bench job: records, sweeps that stop, skipping, the lock


def config(tmp_path, **over):
    base = {
        "attention": {"name": "linear"}, "pattern": "causal_self", "scale": "test", "device": "cpu",
        "dtype": "float32", "batch": 1, "num_heads": 2, "dim": 16, "threads": 1, "min_length": 64,
        "max_length": 1024, "warmup": 0, "repeats": 1, "min_repeats": 1, "max_seconds_per_point": None,
        "point_timeout_s": 60, "memory_limit_gb": None, "lengths": None, "directions": ["forward"],
        "seed": 0, "results_dir": str(tmp_path), "force": False, "imports": [], "lock": None, "isolate": False,
    }
    return {**base, **over}


def fake_measure(oom_at=None, calls=None):
    def measure(cfg, attention, hparams, pattern, length, direction):
        if calls is not None:
            calls.append((attention, length, direction))
        if oom_at is not None and length >= oom_at:
            return {"length": length, "status": "oom", "error": "OutOfMemoryError: simulated"}
        return {"length": length, "status": "ok", "time_median_s": 1e-6 * length, "time_iqr_s": 0.0,
                "peak_memory_bytes": 100 * length, "flops": 10 * length, "error": None, "repeats": 1}
    return measure


def test_resolve_lengths():
    assert bench_job.resolve_lengths({"min_length": 256, "max_length": 32768}) == [2**k for k in range(8, 16)]
    assert bench_job.resolve_lengths({"lengths": [4096, 1024, 1024]}) == [1024, 4096]


def test_oom_ends_the_sweep_of_that_method_only(tmp_path):
    calls = []
    first = bench_job.run_bench(config(tmp_path), fake_measure(oom_at=256, calls=calls), log=lambda s: None)[0]
    points = first["efficiency"]["points"]
    assert [p["status"] for p in points] == ["ok", "ok", "oom"]  # 64, 128, 256; 512 and 1024 not run
    assert first["status"] == "ok" and points[-1]["error"]
    second = bench_job.run_bench(config(tmp_path, attention={"name": "softmax"}), fake_measure(calls=calls),
                                 log=lambda s: None)[0]
    assert [p["length"] for p in second["efficiency"]["points"]] == [64, 128, 256, 512, 1024]
    # a method out of memory at its first length: the record says so
    third = bench_job.run_bench(config(tmp_path, attention={"name": "vanilla"}), fake_measure(oom_at=1),
                                log=lambda s: None)[0]
    assert third["status"] == "oom" and third["error"]["message"]


def test_record_fields(tmp_path):
    records = bench_job.run_bench(config(tmp_path, directions=["forward", "forward_backward"]), fake_measure(),
                                  log=lambda s: None)
    assert [r["efficiency"]["direction"] for r in records] == ["forward", "forward_backward"]
    assert records[0]["run_id"] != records[1]["run_id"]
    for record in records:
        on_disk = json.loads((tmp_path / f"{record['run_id']}.json").read_text())
        assert validate(on_disk) == [] and set(REQUIRED) <= set(on_disk)
        assert on_disk["kind"] == "efficiency" and on_disk["task"] is None and on_disk["scale"] == "test"
        assert on_disk["hardware"] and on_disk["env"]["torch"] == torch.__version__
        eff = on_disk["efficiency"]
        assert {"direction", "batch", "num_heads", "dim", "dtype", "device", "threads", "points", "derived"} <= set(eff)
        assert set(eff["points"][0]) >= {"length", "status", "time_median_s", "time_iqr_s", "peak_memory_bytes",
                                         "flops", "error"}
        assert eff["derived"]["time_exponent"] == pytest.approx(1.0)
        assert eff["derived"]["memory_exponent"] == pytest.approx(1.0)
        assert "2 FLOPs per multiply-add" in eff["flops_convention"]
        assert on_disk["config"]["directions"] == [eff["direction"]]


def test_existing_record_is_skipped_unless_forced(tmp_path):
    calls = []
    bench_job.run_bench(config(tmp_path), fake_measure(calls=calls), log=lambda s: None)
    n = len(calls)
    again = bench_job.run_bench(config(tmp_path), fake_measure(calls=calls), log=lambda s: None)[0]
    assert again["_skipped"] and len(calls) == n
    bench_job.run_bench(config(tmp_path, force=True), fake_measure(calls=calls), log=lambda s: None)
    assert len(calls) == 2 * n


def test_unsupported_pattern_is_a_record(tmp_path):
    from cab import attention_spec, list_attentions

    name = next((n for n in list_attentions() if attention_spec(n).unsupported), None)
    if name is None:
        pytest.skip("every registered attention supports every pattern")
    pattern = next(iter(attention_spec(name).unsupported))
    calls = []
    record = bench_job.run_bench(config(tmp_path, attention={"name": name}, pattern=pattern.value),
                                 fake_measure(calls=calls), log=lambda s: None)[0]
    assert record["status"] == "unsupported" and record["reason"] and not calls
    assert validate(record) == []


def test_points_are_taken_under_the_machine_wide_lock(tmp_path):
    lock = tmp_path / "bench.lock"
    held = []

    def measure(cfg, *args):
        with lock.open() as other:  # a second open file: blocked while the bench holds the lock
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return fake_measure()(cfg, *args)

    for scope in ("job", "point"):
        bench_job.run_bench(config(tmp_path, lock=str(lock), lock_scope=scope, lengths=[64, 128], force=True), measure,
                            log=lambda s: None)
    assert held == [True, True, True, True]


def test_real_points_in_process(tmp_path):
    """The default measurer, in this process, at tiny sizes: forward and forward+backward."""
    records = bench_job.run_bench(config(tmp_path, lengths=[32, 64], directions=["forward", "forward_backward"]),
                                  log=lambda s: None)
    for record in records:
        assert record["status"] == "ok", record["error"]
        for p in record["efficiency"]["points"]:
            assert p["time_median_s"] > 0 and p["flops"] > 0 and p["peak_memory_bytes"] is not None


# ---------------------------------------------------------------------------------------------
# the command line and the Hydra configs


def test_unknown_names_are_one_line_exit_2(capsys):
    assert bench_job.main(["attention=no_such_attention"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valid attentions:" in err and "softmax" in err
    assert bench_job.main(["pattern=sideways"]) == 2
    assert "valid patterns:" in capsys.readouterr().err
    assert bench_job.main(["directions=[sideways]"]) == 2
    assert "valid directions:" in capsys.readouterr().err


def test_cab_bench_through_the_cli(tmp_path, capsys):
    from cab.cli import main as cli_main

    args = ["bench", "attention=linear", "pattern=noncausal_self", "lengths=[32,64]", "directions=[forward]",
            "isolate=false", "lock=null", "dim=16", "num_heads=2", "warmup=0", "repeats=1", f"results_dir={tmp_path}"]
    assert cli_main(args) == 0
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["status"] == "ok" and record["config"]["dim"] == 16
    assert record["command"].startswith("cab bench") and "attention=linear" in record["command"]
    assert "[ok] linear · noncausal_self · forward" in capsys.readouterr().out


def test_experiment_efficiency_config():
    from hydra import compose, initialize_config_module

    from cab.config import register_configs

    register_configs()
    with initialize_config_module(config_module="cab.conf", version_base="1.3"):
        cfg = compose(config_name="bench", overrides=["experiment=efficiency"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.attention == "glob(*)" and set(params.pattern.split(",")) == {"causal_self", "noncausal_self"}
    assert bench_job.resolve_lengths(cfg) == [2**k for k in range(10, 16)]  # 1024 .. 32768


def test_table_from_records(tmp_path):
    def run(name, pattern, f_time, f_mem, f_flops):
        def measure(cfg, attention, hparams, pat, length, direction):
            return {"length": length, "status": "ok", "time_median_s": f_time(length), "time_iqr_s": 0.0,
                    "peak_memory_bytes": f_mem(length), "flops": f_flops(length), "error": None, "repeats": 1}
        bench_job.run_bench(config(tmp_path, attention={"name": name}, pattern=pattern, lengths=LENGTHS), measure,
                            log=lambda s: None)

    for pattern in ("causal_self", "noncausal_self"):
        run("vanilla", pattern, lambda n: 1e-8 * n * n, lambda n: 8 * n * n, lambda n: n * n)
        run("softmax", pattern, lambda n: 1e-8 * n * n, lambda n: 1000 * n, lambda n: n * n)
        run("linear", pattern, lambda n: 3e-5 * n, lambda n: 4000 * n, lambda n: 50 * n)
        run("based", pattern, lambda n: 1e-9 * n**1.5, lambda n: 4000 * n, lambda n: 50 * n)  # linear FLOPs, not time
    text, misses = bench_report.table_markdown(tmp_path)
    assert "## causal_self" in text and "## noncausal_self" in text
    row = next(line for line in text.splitlines() if line.startswith("| linear |"))
    assert "3,000 / 3,000" in row  # time EL vs vanilla: 3e-5·n = 1e-8·n² at n = 3000
    assert any(m.startswith("based · causal_self: time exponent 1.50") for m in misses)
    assert not any(m.startswith("linear") or m.startswith("vanilla") for m in misses)
    assert bench_job.main(["table", "--results", str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text().startswith("# Efficiency (forward)")
    text, _ = bench_report.table_markdown(tmp_path, at=(1024, 99))
    row = next(line for line in text.splitlines() if line.startswith("| linear | 30.7 ms"))
    assert row == "| linear | 30.7 ms · 3.9 MiB | not run | 1.00 |"  # 3e-5·1024 s, 4000·1024 bytes


@pytest.mark.parametrize("baselines", [("vanilla", "softmax"), ()])
def test_table_rows_have_as_many_cells_as_the_header(tmp_path, baselines):
    """Unsupported rows, and no baselines at all, written by the one markdown writer: no row is short
    or long (before, `--baselines` with no names left an empty header column)."""
    bench_job.run_bench(config(tmp_path, attention={"name": "vanilla"}, lengths=[64, 128, 256]), fake_measure(),
                        log=lambda s: None)
    (tmp_path / "unsupported.json").write_text(json.dumps({
        **json.loads(next(tmp_path.glob("*.json")).read_text()), "run_id": "u", "attention": "self_less",
        "status": "unsupported", "reason": "no causal form"}))
    text, _ = bench_report.table_markdown(tmp_path, baselines=baselines)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert "| self_less | unsupported |" in text and len(rows) == 4
    assert len({row.count("|") for row in rows}) == 1, rows
    assert rows[0].count("|") == 10 + 2 * len(baselines)  # 9 columns and 2 per baseline


@pytest.mark.slow  # fresh processes (a few seconds each)
def test_attention_speed_script_still_works(tmp_path):
    """benchmarks/attention_speed.py's call signature of measure_point_isolated is kept."""
    point = measure_point_isolated(attention="linear", pattern="causal_self", length=64, batch=1, dim=16,
                                   num_heads=2, repeats=2)
    assert isinstance(point, Point) and point.status == "ok" and point.time_median_s > 0
    assert point.as_dict()["length"] == 64
