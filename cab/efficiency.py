"""Measuring one attention layer: forward time and peak memory at a given length.

Time: warm-up calls, then repeated timed calls; median and interquartile range. On CUDA the clock
is read after `torch.cuda.synchronize()`; on CPU the thread count is fixed and recorded.
Memory: CUDA: peak allocated bytes with the counter reset before the measured call. CPU: each point
runs in a fresh process and reports its peak resident memory during the call minus the resident
memory just before it (`ru_maxrss`), so earlier points cannot hide a later peak.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from cab.patterns import Pattern
from cab.registry import build_attention


@dataclass
class Point:
    attention: str
    pattern: str
    length: int
    status: str  # ok | oom | failed
    time_median_s: float | None = None
    time_iqr_s: float | None = None
    peak_memory_bytes: int | None = None
    flops: int | None = None
    threads: int | None = None
    device: str = "cpu"
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_inputs(pattern: Pattern, batch: int, length: int, dim: int, device: str, dtype=torch.float32, seed: int = 0):
    """x: (B, L, dim); context: (B, L, dim) for cross patterns (Lk = Lq = length), else None."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g, dtype=dtype).to(device)
    context = torch.randn(batch, length, dim, generator=g, dtype=dtype).to(device) if pattern.is_cross else None
    return x, context


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn, device: str = "cpu", warmup: int = 2, repeats: int = 5) -> tuple[float, float]:
    """Median and interquartile range (seconds) of `fn()` over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    if len(samples) >= 4:
        q = statistics.quantiles(samples, n=4)
        iqr = q[2] - q[0]
    else:
        iqr = max(samples) - min(samples)
    return statistics.median(samples), iqr


def _rss_peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def measure_point(
    attention: str,
    pattern: Pattern | str,
    length: int,
    batch: int = 1,
    dim: int = 512,
    num_heads: int = 8,
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    backward: bool = False,
    hparams: dict[str, Any] | None = None,
    measure_memory: bool = True,
) -> Point:
    """Measure one (attention, pattern, length) point in this process."""
    pattern = Pattern.parse(pattern)
    point = Point(attention, pattern.value, length, "ok", threads=torch.get_num_threads(), device=device)
    try:
        torch.manual_seed(0)
        layer = build_attention(attention, dim=dim, num_heads=num_heads, pattern=pattern, **(hparams or {}))
        layer = layer.to(device).eval()
        point.flops = layer.flops(batch, length, length)
        x, context = make_inputs(pattern, batch, length, dim, device)
        if backward:
            x.requires_grad_(True)

        def call():
            if backward:
                layer(x, context=context).sum().backward()
            else:
                with torch.no_grad():
                    layer(x, context=context)

        if measure_memory:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                call()
                torch.cuda.synchronize()
                point.peak_memory_bytes = torch.cuda.max_memory_allocated() - before
            else:
                before = _rss_peak_bytes()
                call()
                point.peak_memory_bytes = max(0, _rss_peak_bytes() - before)
        point.time_median_s, point.time_iqr_s = time_call(call, device, warmup, repeats)
    except torch.OutOfMemoryError as exc:
        point.status, point.error = "oom", str(exc).splitlines()[0]
    except MemoryError as exc:
        point.status, point.error = "oom", f"MemoryError: {exc}"
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
        point.status, point.error = "failed", f"{type(exc).__name__}: {exc}"
    return point


def measure_point_isolated(timeout_s: float = 900, **kwargs: Any) -> Point:
    """`measure_point` in a fresh Python process (so CPU peak memory is this point's alone).
    A process killed by the kernel for memory, or past `timeout_s`, is an `oom`/`failed` point."""
    args = dict(kwargs)
    args["pattern"] = Pattern.parse(args["pattern"]).value
    code = "import json,sys; from cab.efficiency import measure_point; print(json.dumps(measure_point(**json.loads(sys.argv[1])).as_dict()))"
    env = dict(os.environ)
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return Point(kwargs["attention"], args["pattern"], kwargs["length"], "timeout", error=f"over {timeout_s}s")
    if proc.returncode != 0:
        status = "oom" if proc.returncode in (-9, 137) else "failed"
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return Point(kwargs["attention"], args["pattern"], kwargs["length"], status, error=f"exit {proc.returncode}: {tail}")
    return Point(**json.loads(proc.stdout.strip().splitlines()[-1]))
