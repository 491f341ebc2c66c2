"""`cab bench`: the efficiency of one attention layer against sequence length.

    cab bench attention=linear pattern=causal_self [lengths=[1024,4096]] [bench=cpu|paper]
    cab bench -m attention=vanilla,softmax,linear pattern=causal_self,noncausal_self
    cab bench -m experiment=efficiency results_dir=DIR        # every attention × both self patterns
    cab bench table --results DIR --out FILE.md                # exponents and efficiency lengths

A job is one attention × pattern. For each direction (forward; forward+backward; decode, generation
token by token against context length: cab/bench/decode.py, asked for with directions=[decode]) it sweeps the
lengths (powers of two from `min_length` to `max_length` unless `lengths` is given), measuring
time, peak memory and FLOPs at each (cab/bench/measure.py says how), holding a machine-wide file lock
for the job (`lock_scope=point`: for each point) so no two benchmarks time at once, and stops the sweep at the first point that runs out of memory or time;
the failing point is kept in the record. Then it writes one `kind: efficiency` record per
direction, named by the hash of the resolved config with that single direction, so a finished
record is skipped on a rerun unless `force=true`. docs/efficiency.md has the definitions.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from cab.bench.decode import DECODE_FIELDS, finish_record
from cab.bench.distributed import POINT_EXTRA, efficiency_fields
from cab.distributed.config import strategy_of
from cab.distributed.group import writes_results
from cab.patterns import Pattern
from cab.registry import ChoiceError, attention_spec, import_modules
from cab.results.environment import command_line, environment, hardware_label, job_command, now_iso
from cab.results.records import SCHEMA, read_record, run_id_of, write_record
from cab.results.status import classify, error_info

DIRECTIONS = ("forward", "forward_backward", "decode")  # decode: cab/bench/decode.py (not run unless asked)
DEFAULT_DIRECTIONS = ("forward", "forward_backward")
POINT_FIELDS = ("length", "status", "time_median_s", "time_iqr_s", "peak_memory_bytes", "flops", "error", "repeats")
STOPPING = ("oom", "timeout")  # a point with this status ends the method's sweep
EXPONENT_POINTS = 3  # exponents: slope over the last 3 ok points
EXPONENT_METHOD = "least-squares slope of log(cost) on log(length) over the last 3 ok lengths"

METRIC_INFO = {
    "time_exponent": {"higher_is_better": False,
                      "description": "k in time ∝ L^k, " + EXPONENT_METHOD},
    "memory_exponent": {"higher_is_better": False,
                        "description": "k in peak memory ∝ L^k, " + EXPONENT_METHOD},
    "flops_exponent": {"higher_is_better": False,
                       "description": "k in analytic FLOPs ∝ L^k over the same lengths"},
}


# ---------------------------------------------------------------------------------------------
# one job


def resolve_lengths(config: dict[str, Any]) -> list[int]:
    """The explicit `lengths`, or the powers of two from `min_length` to `max_length`."""
    if config.get("lengths"):
        return sorted({int(n) for n in config["lengths"]})
    lo, hi = int(config.get("min_length", 256)), int(config.get("max_length", 32768))
    out, n = [], 1 << max(0, math.ceil(math.log2(lo)))
    while n <= hi:
        out.append(n)
        n *= 2
    return out


def resolve_device(config: dict[str, Any]) -> str:
    wanted = str(config.get("device") or "auto")
    if wanted == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


@contextlib.contextmanager
def bench_lock(path: str | None):
    """Hold an exclusive `flock` on `path` (shared with benchmarks/attention_speed.py), so no two
    benchmarks on the machine time at once. None: no lock. Under a launcher (torchrun) only local rank 0
    takes it: the others follow it through their collectives."""
    if not path or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    lock = Path(path)
    lock.touch(exist_ok=True)
    with lock.open() as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def measure(config: dict[str, Any], attention: str, hparams: dict, pattern: str, length: int, direction: str) -> dict:
    """One point, as configured: in a fresh process on CPU (memory), in this one on CUDA."""
    if direction == "decode":  # time per generated token and the decode state's memory (cab/bench/decode.py)
        from cab.bench.decode import measure as measure_decode

        return measure_decode(config, attention, hparams, pattern, length)
    if strategy_of(config):  # sequence parallel: a group of processes per point (cab/bench/distributed.py)
        from cab.bench.distributed import measure as measure_distributed

        return measure_distributed(config, attention, hparams, pattern, length, direction)
    from cab.bench.measure import measure_point, measure_point_isolated

    device = resolve_device(config)
    isolate = config.get("isolate", "auto")
    isolate = (not device.startswith("cuda")) if isolate in ("auto", None) else bool(isolate)
    kwargs = dict(
        attention=attention, pattern=pattern, length=length, batch=int(config["batch"]), dim=int(config["dim"]),
        num_heads=int(config["num_heads"]), device=device, warmup=int(config["warmup"]), repeats=int(config["repeats"]),
        backward=direction == "forward_backward", hparams=hparams, dtype=str(config.get("dtype", "float32")),
        threads=config.get("threads"), max_seconds=config.get("max_seconds_per_point"),
        min_repeats=int(config.get("min_repeats", 3)), seed=int(config.get("seed", 0)),
        imports=list(config.get("imports") or []),
    )
    if isolate:
        limit = config.get("memory_limit_gb")
        point = measure_point_isolated(
            timeout_s=float(config.get("point_timeout_s") or 900),
            memory_limit_bytes=int(float(limit) * 2**30) if limit else None, **kwargs,
        )
    else:
        point = measure_point(**kwargs)
    return point.as_dict()


def _exponents(points: list[dict]) -> dict[str, Any]:
    from cab.bench.scaling import scaling_exponent

    time_k, time_lengths = scaling_exponent(points, "time_median_s", EXPONENT_POINTS)
    mem_k, mem_lengths = scaling_exponent(points, "peak_memory_bytes", EXPONENT_POINTS)
    flops_k, _ = scaling_exponent([p for p in points if p["length"] in time_lengths], "flops", EXPONENT_POINTS)
    return {
        "time_exponent": time_k, "memory_exponent": mem_k, "flops_exponent": flops_k,
        "time_exponent_lengths": time_lengths, "memory_exponent_lengths": mem_lengths,
        "exponent_method": EXPONENT_METHOD,
    }


def run_bench(
    config: dict[str, Any],
    measure_fn: Callable[..., dict] = measure,
    command: str | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[dict[str, Any]]:
    """Run one bench job (attention × pattern) from a resolved config; write and return one record
    per direction. Never raises for a problem of the measurement itself."""
    import_modules(config.get("imports") or [])
    directions = list(config.get("directions") or DEFAULT_DIRECTIONS)
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ChoiceError(f"unknown direction {bad[0]!r}; valid directions: {', '.join(DIRECTIONS)}")
    hparams = dict(config["attention"])
    attention = hparams.pop("name")
    pattern = Pattern.parse(config["pattern"])
    scope = config.get("lock_scope") or "job"
    if scope not in ("job", "point"):
        raise ChoiceError(f"unknown lock_scope {scope!r}; valid: job, point")
    job_lock, point_lock = (config.get("lock"), None) if scope == "job" else (None, config.get("lock"))
    try:
        if pattern not in attention_spec(attention).patterns:
            job_lock = point_lock = None  # nothing is timed: do not queue for the machine
    except ChoiceError:
        job_lock = point_lock = None  # the record will say what is wrong
    with bench_lock(job_lock):
        try:
            return [_run_direction(config, attention, hparams, pattern, d, measure_fn, command, log, point_lock)
                    for d in directions]
        finally:
            if "decode" in directions:
                from cab.bench.decode import close_workers

                close_workers()


def _run_direction(config, attention, hparams, pattern, direction, measure_fn, command, log, point_lock) -> dict[str, Any]:
    started = time.time()
    job_config = {**config, "directions": [direction]}
    if direction != "decode":  # the decode settings change no forward record (nor its run_id)
        job_config.pop("decode", None)
    run_id = run_id_of(job_config)
    results_dir = Path(config["results_dir"])
    target = results_dir / f"{run_id}.json"
    if target.exists() and not config.get("force", False):
        record = read_record(target)
        record["_skipped"] = True
        return record

    import torch

    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    device = resolve_device(config)
    efficiency: dict[str, Any] = {
        "direction": direction,
        "batch": int(config["batch"]),
        "num_heads": int(config["num_heads"]),
        "dim": int(config["dim"]),
        "dtype": str(config.get("dtype", "float32")),
        "device": device,
        "threads": torch.get_num_threads() if not device.startswith("cuda") else None,
        "points": [],
        "derived": {"time_exponent": None, "memory_exponent": None},
        "lengths_requested": resolve_lengths(config),
        "flops_convention": "forward FLOPs of the layer by its analytic formula, 2 FLOPs per multiply-add "
                            "(the same forward figure in forward_backward records)",
        "mode": "eval, torch.no_grad()" if direction == "forward" else "train, input and parameter gradients",
        "memory_method": None,
        "time_method": None,
        **efficiency_fields(config),  # distributed: world_size, strategy and how it ran (cab/bench/distributed.py)
    }
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "efficiency",
        "run_id": run_id,
        "status": "ok",
        "attention": attention,
        "pattern": pattern.value,
        "task": None,
        "seed": int(config.get("seed", 0)),
        "scale": config.get("scale"),
        "hardware": None,
        "metrics": {},
        "metric_info": METRIC_INFO,
        "cost": {},
        "reason": None,
        "efficiency": efficiency,
        "config": job_config,
        "env": {},
        "command": command or command_line(),
        "started_at": now_iso(),
        "duration_s": None,
        "error": None,
    }
    try:
        record["env"] = environment()
        record["hardware"] = hardware_label(record["env"])
        if device.startswith("cuda"):
            record["hardware"] = record["env"].get("device") or record["hardware"]
        spec = attention_spec(attention)
        if direction == "decode":
            from cab.bench.decode import unsupported_reason

            reason = unsupported_reason(spec, pattern)
        else:
            reason = spec.unsupported[pattern] if pattern not in spec.patterns else None
        if reason is not None:
            record["status"] = "unsupported"
            record["reason"] = reason
        else:
            for length in efficiency["lengths_requested"]:
                with bench_lock(point_lock):
                    raw = measure_fn(config, attention, hparams, pattern.value, length, direction)
                point = {k: raw.get(k) for k in POINT_FIELDS + (DECODE_FIELDS if direction == "decode" else ())}
                point.update({k: raw[k] for k in (POINT_EXTRA if strategy_of(config) else ()) if k in raw})
                efficiency["points"].append(point)
                efficiency["memory_method"] = efficiency["memory_method"] or raw.get("memory_method")
                efficiency["time_method"] = efficiency["time_method"] or raw.get("time_method")
                log(_point_line(attention, pattern.value, direction, point))
                if point["status"] in STOPPING:
                    break
            points = efficiency["points"]
            derived = _exponents(points)
            efficiency["derived"] = derived
            record["metrics"] = {k: derived[k] for k in ("time_exponent", "memory_exponent", "flops_exponent")
                                 if derived[k] is not None}
            ok = [p for p in points if p["status"] == "ok"]
            if not ok:
                first = points[0] if points else {"status": "failed", "error": "no lengths to measure"}
                record["status"] = first["status"]
                record["error"] = {"type": first["status"], "message": first.get("error") or first["status"],
                                   "traceback": ""}
            mems = [p["peak_memory_bytes"] for p in ok if p.get("peak_memory_bytes") is not None]
            record["cost"] = {
                "params": _params(attention, hparams, pattern, config),
                "max_length_ok": max((p["length"] for p in ok), default=None),
                "flops_at_max_length": max(ok, key=lambda p: p["length"])["flops"] if ok else None,
                "peak_memory_bytes": max(mems) if mems else None,
                "wall_s": None,
            }
        if direction == "decode":  # its model, mode and methods (cab/bench/decode.py)
            finish_record(record, config)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a record; the sweep goes on
        record["status"] = classify(exc)  # as `cab run` classifies: an out-of-memory job is oom here too
        record["error"] = error_info(exc)
    record["duration_s"] = round(time.time() - started, 3)
    if record["cost"]:
        record["cost"]["wall_s"] = record["duration_s"]
    if writes_results():  # under a launcher, rank 0 writes
        write_record(record, results_dir)
    return record


def _params(attention: str, hparams: dict, pattern: Pattern, config: dict) -> int | None:
    from cab.registry import build_attention, with_length_bound

    try:
        longest = max(resolve_lengths(config))  # params of a length-bounded attention: at the longest length
        layer = build_attention(attention, dim=int(config["dim"]), num_heads=int(config["num_heads"]),
                                pattern=pattern, **with_length_bound(attention, hparams, longest))
    except Exception:  # noqa: BLE001 - the points already say what failed
        return None
    return sum(p.numel() for p in layer.parameters())


def _point_line(attention: str, pattern: str, direction: str, p: dict) -> str:
    t = f"{p['time_median_s'] * 1e3:10.2f} ms ± {p['time_iqr_s'] * 1e3:.2f}" if p.get("time_median_s") else f"{p['status']:>10}"
    m = f"{p['peak_memory_bytes'] / 2**20:9.1f} MiB" if p.get("peak_memory_bytes") is not None else "        -"
    return f"  {attention} · {pattern} · {direction} L={p['length']:>6} {t} {m}" + (f"  {p['error']}" if p.get("error") else "")


def summary(record: dict) -> str:
    eff = record.get("efficiency") or {}
    d = eff.get("derived") or {}
    fmt = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    extra = record.get("reason") or (record.get("error") or {}).get("message") or ""
    skipped = " (exists; skipped, force=true to rerun)" if record.get("_skipped") else ""
    body = f"time L^{fmt(d.get('time_exponent'))} memory L^{fmt(d.get('memory_exponent'))}" if record["status"] == "ok" else ""
    return (f"[{record['status']}] {record['attention']} · {record['pattern']} · {eff.get('direction')} "
            f"{body} {extra}{skipped} -> {record['run_id']}").replace("  ", " ")


# ---------------------------------------------------------------------------------------------
# the Hydra app (`cab bench --help` prints this module's docstring)


def _job(cfg) -> list[dict] | None:
    from omegaconf import OmegaConf

    from cab.config import register_configs

    config = OmegaConf.to_container(cfg, resolve=True)
    import_modules(config.get("imports") or [])
    register_configs()
    records = run_bench(config, command=job_command("cab bench"))
    for record in records:
        print(summary(record), flush=True)
    return records


def _hydra_app():
    import hydra

    return hydra.main(version_base="1.3", config_path="pkg://cab.conf", config_name="bench")(_job)


def main(argv: list[str]) -> int:
    """`cab bench ...` (the CLI dispatches here): Hydra overrides, or `table ...`."""
    args = list(argv)
    if args and args[0] == "table":
        from cab.bench.report import table_main

        return table_main(args[1:])
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    from cab.config import check_overrides, preimport, register_configs

    try:
        preimport(args)
        register_configs()
        check_overrides(args, multirun=True, app="bench")  # names, then every job's values (cab/schema.py)
    except ChoiceError as exc:
        print(f"cab: error: {exc}", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = ["cab bench", *args]
    try:
        _hydra_app()()
    except SystemExit as exc:  # Hydra exits after a sweep or on a config error; keep its code
        if isinstance(exc.code, str):
            print(f"cab: error: {exc.code}", file=sys.stderr)
            return 1
        return int(exc.code or 0)
    finally:
        sys.argv = saved
    return 0
