"""The one failure classifier: an exception a job raised -> the record's status, and its error.

`cab run` (a training job) and `cab bench` (a job, and each point it measures) both classify with
`classify`, so one exception gets one status wherever it is raised:

- `timeout`: `JobTimeout`, a job past its time limit;
- `nan`: `NaNLoss`, a loss or metric that is not finite;
- `oom`: every flavour of out-of-memory: torch's `OutOfMemoryError` (CUDA), Python's `MemoryError`,
  and the CPU allocator's "DefaultCPUAllocator: can't allocate memory", which torch raises as a
  plain RuntimeError, so only its text tells it apart;
- `failed`: anything else.

The statuses a record can have beside these (`ok`, `unsupported`) are not failures:
`cab.results.records.STATUSES` lists them all. No torch import here: an exception can only be
torch's once torch is loaded, so torch is looked up in `sys.modules`.
"""

from __future__ import annotations

import sys
import traceback


class NaNLoss(RuntimeError):
    """A training loss or an evaluated metric that is not finite."""


class JobTimeout(RuntimeError):
    """A job past its time limit (`trainer.max_seconds`)."""


# lower-cased fragments of out-of-memory messages: CUDA's, and the CPU allocator's
# ("[enforce fail at alloc_cpu.cpp] ... DefaultCPUAllocator: can't allocate memory: you tried to allocate ...")
OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    torch_oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if torch_oom is not None and isinstance(exc, torch_oom):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in OOM_TEXT)


def classify(exc: BaseException) -> str:
    """`timeout`, `nan`, `oom` or `failed` for an exception that ended a job or a measured point."""
    if isinstance(exc, JobTimeout):
        return "timeout"
    if isinstance(exc, NaNLoss):
        return "nan"
    if is_out_of_memory(exc):
        return "oom"
    return "failed"


def error_info(exc: BaseException) -> dict[str, str]:
    """A record's `error`: {type, message (its first line), traceback (the header and the last frames)}."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    tail = "".join(lines[:1] + lines[-6:] if len(lines) > 7 else lines)  # keep the header and the last frames
    return {"type": type(exc).__name__, "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            "traceback": tail[-4000:]}
