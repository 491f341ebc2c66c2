"""Compiled CPU kernels, built on first use with torch's C++ extension loader; the torch forms stay the fallback.

One source (`csrc/channel_scan.cpp`), one module, Mamba-1's kernels:
- the scan: the recurrence with a per-channel decay given by its factors (Δ_t, A), a vector state per channel
  (Dv = 1) and q, k shared by the channels: `cab.ops.causal_recurrence`'s case ("plain"), and Mamba's whole
  selective scan (`cab.ops.selective_scan`: W_Δ, the softplus, Δ_t u_t and the skip made in the same loop,
  either direction);
- the depthwise short convolution with its SiLU (`cab.ops.short_conv`).
In eager torch the scan is many passes over (L, B, E, N) numbers (cab/ops/recurrence.py, `_ChannelScan`) and
every elementwise step around it another pass over (B, L, E); fused, each number is made and used in cache,
which is what makes `mamba` train at a few times softmax's cost on a CPU (benchmarks/results/mamba_scan.md).

The build needs a C++ compiler and ninja (`pip install ninja`, a dependency of cab); it takes about a minute
once, then loads from torch's extension cache (TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions). The
cache entry is named by a hash of the source, the flags and this CPU's model and features, so a home folder
shared by machines of different CPUs never loads a kernel built for another. `CAB_NATIVE_KERNELS=0` turns the
kernels off (the torch forms run); where the build fails, the torch forms run and one warning says why.
`kernel_status()` says which form runs, and records carry it (`attention_info.runtime`, via the layers'
`runtime_info`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

SOURCE = Path(__file__).parent / "csrc" / "channel_scan.cpp"
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]  # built for this machine (see the cache name);
#   -fopenmp-simd lets the exp loops call glibc's vector exp (libmvec)
ENV = "CAB_NATIVE_KERNELS"

_lock = threading.Lock()
_state: dict[str, object] = {}  # "module": the loaded extension or None; "reason": why not


def _cpu_fingerprint() -> str:
    """The CPU's model and feature flags (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.startswith(("model name", "flags"))][:2]
        if wanted:
            return "\n".join(wanted)
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def enabled() -> bool:
    """False when CAB_NATIVE_KERNELS=0 (or false/no/off)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def channel_scan_module() -> ModuleType | None:
    """The compiled selective scan, built on first use; None when turned off or when it cannot be built."""
    if not enabled():
        return None
    with _lock:
        if "module" not in _state:
            _state["module"], _state["reason"] = _build()
            if _state["module"] is None:
                warnings.warn(f"cab: the compiled CPU scan is unavailable ({_state['reason']}); mamba runs its "
                              f"torch form, several times slower", RuntimeWarning, stacklevel=3)
        return _state["module"]


def _build() -> tuple[ModuleType | None, str | None]:
    source = SOURCE.read_text()
    key = hashlib.sha256("\n".join([source, " ".join(CFLAGS), _cpu_fingerprint(), torch.__version__]).encode())
    name = f"cab_channel_scan_{key.hexdigest()[:12]}"
    try:
        from torch.utils.cpp_extension import load

        module = load(name=name, sources=[str(SOURCE)], extra_cflags=CFLAGS, verbose=False)
    except Exception as exc:  # noqa: BLE001 - no compiler, no ninja, a failed build: the torch form runs
        first = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {first[0] if first else ''}"[:300]
    return module, None


def kernel_status() -> dict[str, str]:
    """{"channel_scan": "compiled" | "torch (<why>)"}: which form of each kernel runs in this process."""
    if not enabled():
        return {"channel_scan": f"torch ({ENV}=0)"}
    module = channel_scan_module()
    return {"channel_scan": "compiled" if module is not None else f"torch ({_state.get('reason')})"}
