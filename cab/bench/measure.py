"""Measuring one attention layer at one length: time, peak memory, FLOPs.

How a point is taken (docs/efficiency.md has the full story):

Time: `warmup` untimed calls, then `repeats` timed calls (fewer, but at least `min_repeats`, when a
call is slow enough to blow `max_seconds`); the record keeps the median and the interquartile range.
On CUDA the clock is read only after `torch.cuda.synchronize()`, before the start and after the
call, so a sample is the work done, not the launch. On CPU the thread count is fixed
(`threads`) and recorded, and glibc keeps freed memory for reuse during the timed calls
(`held_heap`), so time is the computation and not the page faults of fresh mmaps. Forward is
timed in eval mode under `torch.no_grad()`; forward+backward
in train mode, input gradients on, `.grad` cleared before each call so every call is the same.

Memory: CUDA: `max_memory_allocated()` after `reset_peak_memory_stats()`, minus the bytes allocated
before the call. CPU: the point runs in a fresh process (`measure_point_isolated`); the kernel's
peak-RSS counter (VmHWM) is reset through /proc/self/clear_refs just before the measured call,
and the point's memory is that peak minus the resident memory just before the call (one unmeasured
call runs first, so one-time library buffers are in the baseline). During these calls glibc is
told to serve every block of 64 KiB or more by mmap (returned to the system when freed), so memory
freed earlier in the process cannot be silently reused and hide the call's peak. These are the
bytes the call itself needs on top of its weights and inputs.

FLOPs: the layer's own analytic `flops(batch, len_q, len_k)`, forward, 2 FLOPs per multiply-add
(cross-checked against torch's and fvcore's counters in tests/test_flops.py).

Derived figures (scaling exponents, efficiency lengths) are fitted from the points by `cab.bench.scaling`.
A point that fails gets its status from `cab.results.status.classify`, as a job of `cab run` does.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from cab.patterns import Pattern
from cab.registry import build_attention, import_modules, with_length_bound
from cab.results.status import classify

FLOPS_CONVENTION = "forward FLOPs of the layer by its analytic formula, 2 FLOPs per multiply-add"


@dataclass
class Point:
    attention: str
    pattern: str
    length: int
    status: str  # ok | oom | timeout | failed
    time_median_s: float | None = None
    time_iqr_s: float | None = None
    peak_memory_bytes: int | None = None
    flops: int | None = None
    threads: int | None = None
    device: str = "cpu"
    error: str | None = None
    repeats: int | None = None  # timed samples behind the median
    memory_method: str | None = None
    time_method: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_inputs(pattern: Pattern, batch: int, length: int, dim: int, device: str, dtype=torch.float32, seed: int = 0):
    """x: (B, L, dim); context: (B, L, dim) for cross patterns (Lk = Lq = length), else None."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
    context = None
    if pattern.is_cross:
        context = torch.randn(batch, length, dim, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
    return x, context


# ---------------------------------------------------------------------------------------------
# time

_clock = time.perf_counter  # module-level so tests can substitute a fake clock


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range (Q3 - Q1, linear interpolation between order statistics, as
    numpy.percentile's default); a single sample has IQR 0."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return samples[0], 0.0
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q[2] - q[0]


def time_samples(
    fn: Callable[[], object],
    device: str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    max_seconds: float | None = None,
    min_repeats: int = 3,
) -> list[float]:
    """Seconds per call of `fn()`: `warmup` untimed calls, then up to `repeats` timed ones. With
    `max_seconds`, timing stops once that much has been spent and `min_repeats` samples exist.
    On CUDA every sample is bracketed by `torch.cuda.synchronize()`."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    for _ in range(repeats):
        _sync(device)  # nothing queued before the start
        start = _clock()
        fn()
        _sync(device)  # the call's kernels are finished before the clock is read
        samples.append(_clock() - start)
        spent += samples[-1]
        if max_seconds is not None and spent >= max_seconds and len(samples) >= min_repeats:
            break
    return samples


def time_call(fn, device: str = "cpu", warmup: int = 2, repeats: int = 5) -> tuple[float, float]:
    """Median and interquartile range (seconds) of `fn()` over `repeats` calls after `warmup` calls."""
    return median_iqr(time_samples(fn, device, warmup, repeats))


# ---------------------------------------------------------------------------------------------
# CPU memory: the kernel's per-process peak-RSS counter, reset just before the measured call

_PROC_STATUS = "/proc/self/status"


def _status_kib(field: str) -> int | None:
    try:
        with open(_PROC_STATUS) as f:
            match = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)))
    except (OSError, AttributeError):
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_MMAP_MAX_DEFAULT = 65536

HEAP_TIMING = "glibc heap held (no mmap, no trim) during warm-up and timed calls, as a caching allocator"


@contextmanager
def held_heap(device: str):
    """Time the computation, not the kernel's page faults. glibc serves every block of 32 MiB or
    more with a fresh mmap and unmaps it on free, so on CPU each call pays page faults and the
    zeroing of every large temporary again; that cost jumps as tensors cross 32 MiB (at width 512,
    past length 16,384) and bends linear-time curves upwards (benchmarks/results/allocator_timing.md).
    With mmap off and trimming off, a freed block is kept and reused by any later request it fits,
    close to torch's CUDA caching allocator or jemalloc/tcmalloc (PyTorch's CPU advice), though
    glibc does not guarantee every block is reused. Yields the method's description (None when not
    applied: CUDA, or no glibc)."""
    applied = not device.startswith("cuda") and _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim
    try:
        yield HEAP_TIMING if applied else None
    finally:
        if applied:
            _mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX_DEFAULT)
            _mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)


def cpu_peak_memory(call: Callable[[], object], warm_first: bool = True) -> tuple[int, str]:
    """(bytes, method): peak RSS during `call()` above the RSS just before it. With `warm_first`,
    one unmeasured call runs first (under the same allocator setting), so libraries' one-time
    buffers (thread pools, kernel caches) count in the baseline, not in the method's memory."""
    strict = _mallopt(_M_MMAP_THRESHOLD, 64 * 1024)  # big blocks: mmap, unmapped when freed
    try:
        if warm_first:
            call()
        if _reset_peak_rss() and _status_kib("VmHWM") is not None:
            before = _status_kib("VmRSS") or 0
            call()
            peak = _status_kib("VmHWM") or 0
            method = "peak RSS (VmHWM reset) above RSS before the call" + (", mmap threshold 64 KiB" if strict else "")
            return max(0, (peak - before) * 1024), method
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        call()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(0, (after - before) * 1024), "rise of the process's peak RSS (ru_maxrss)"
    finally:
        if strict:  # back to glibc's usual steady state for the timed calls
            _mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
            _mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)


def cuda_peak_memory(call: Callable[[], object], device: str) -> tuple[int, str]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    call()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before), "cuda max_memory_allocated (reset) above allocated before"


# ---------------------------------------------------------------------------------------------
# one point

def step_call(run: Callable, layer, x, context, backward: bool) -> Callable[[], None]:
    """One timed call: `run(x, context=context)` without autograd (forward), or its forward and
    backward with every gradient of the inputs and of `layer`'s parameters cleared first."""
    import torch

    if backward:
        x.requires_grad_(True)
        if context is not None:
            context.requires_grad_(True)
    params = list(layer.parameters())

    def call():
        if backward:
            for t in [x, context, *params]:
                if t is not None:
                    t.grad = None
            run(x, context=context).sum().backward()
        else:
            with torch.no_grad():
                run(x, context=context)

    return call


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
    dtype: str = "float32",
    threads: int | None = None,
    max_seconds: float | None = None,
    min_repeats: int = 3,
    seed: int = 0,
    imports: list[str] | None = None,
) -> Point:
    """Measure one (attention, pattern, length) point in this process. `backward`: time and
    memory of forward+backward (train mode) instead of forward (eval mode, no grad)."""
    if threads:
        torch.set_num_threads(int(threads))
    import_modules(imports or [])
    pattern = Pattern.parse(pattern)
    point = Point(attention, pattern.value, length, "ok", threads=torch.get_num_threads(), device=device)
    try:
        torch.manual_seed(seed)
        # a length-bounded attention (Linformer) is built for this point's length, as its paper sizes it
        layer = build_attention(attention, dim=dim, num_heads=num_heads, pattern=pattern,
                                **with_length_bound(attention, hparams or {}, length))
        layer = layer.to(device=device, dtype=getattr(torch, dtype))
        layer.train(backward)
        point.flops = int(layer.flops(batch, length, length))
        x, context = make_inputs(pattern, batch, length, dim, device, getattr(torch, dtype), seed)
        call = step_call(layer, layer, x, context, backward)

        if device.startswith("cuda"):
            call()  # one call first: library handles and workspaces are not the method's memory
            if measure_memory:
                point.peak_memory_bytes, point.memory_method = cuda_peak_memory(call, device)
            warm = max(0, warmup - 1)
        else:
            if measure_memory:  # in a fresh process (see the module docstring)
                point.peak_memory_bytes, point.memory_method = cpu_peak_memory(call)
                warm = max(1, warmup - 2)  # its two calls warmed up the caches, not the held heap
            else:
                warm = warmup
        with held_heap(device) as point.time_method:
            samples = time_samples(call, device, warm, repeats, max_seconds, min_repeats)
        point.time_median_s, point.time_iqr_s = median_iqr(samples)
        point.repeats = len(samples)
    except Exception as exc:  # noqa: BLE001 - a failed point is recorded, the sweep goes on
        point.status = classify(exc)  # the classifier `cab run` uses: the CPU allocator's error is oom
        point.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    return point


def _limit_memory(limit_bytes: int | None):
    if not limit_bytes:
        return None

    def apply():  # runs in the child before exec: allocations past the limit fail cleanly (oom)
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_bytes), int(limit_bytes)))

    return apply


def measure_point_isolated(timeout_s: float = 900, memory_limit_bytes: int | None = None, **kwargs: Any) -> Point:
    """`measure_point` in a fresh Python process (so CPU peak memory is this point's alone).
    A process killed by the kernel (SIGKILL: the OOM killer) or refused memory past
    `memory_limit_bytes` (its address-space limit) is an `oom` point; one past `timeout_s` a
    `timeout` point."""
    args = dict(kwargs)
    args["pattern"] = Pattern.parse(args["pattern"]).value
    code = (
        "import json,sys; from cab.bench.measure import measure_point; "
        "print(json.dumps(measure_point(**json.loads(sys.argv[1])).as_dict()))"
    )
    env = dict(os.environ)
    device = args.get("device", "cpu")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=timeout_s, env=env,
            preexec_fn=_limit_memory(memory_limit_bytes),
        )
    except subprocess.TimeoutExpired:
        return Point(kwargs["attention"], args["pattern"], kwargs["length"], "timeout", device=device,
                     threads=args.get("threads"), error=f"over {timeout_s:g} s")
    if proc.returncode != 0:
        status = "oom" if proc.returncode in (-9, 137) else "failed"
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        return Point(kwargs["attention"], args["pattern"], kwargs["length"], status, device=device,
                     threads=args.get("threads"), error=f"exit {proc.returncode}: {tail}"[:500])
    return Point(**json.loads(proc.stdout.strip().splitlines()[-1]))
