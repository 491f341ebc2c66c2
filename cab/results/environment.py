"""What a record says about where and how it ran: versions, git commit, hardware, the command, time.

Imports torch only inside `environment()`, which a job calls once it has torch loaded anyway.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_output(*args: str) -> str | None:
    """`git <args>` run in the package's folder (the checkout, for an editable install); None when
    git or the checkout is missing."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


_ENV_CACHE: dict[str, Any] | None = None


def environment() -> dict[str, Any]:
    """cab version, git commit and dirty flag, torch, python, device name, threads."""
    global _ENV_CACHE
    if _ENV_CACHE is None:
        import torch

        import cab

        commit = git_output("rev-parse", "HEAD")
        dirty = git_output("status", "--porcelain", "--untracked-files=no")
        if torch.cuda.is_available():
            device = torch.cuda.get_device_name(0)
        else:
            device = f"cpu: {_cpu_name()}"
        _ENV_CACHE = {
            "cab_version": cab.__version__,
            "git_commit": commit,
            "git_dirty": bool(dirty) if dirty is not None else None,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": device,
            "cpu_count": os.cpu_count(),
        }
    env = dict(_ENV_CACHE)
    import torch

    env["threads"] = torch.get_num_threads()
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_label(env: dict[str, Any]) -> str:
    """A short hardware group name for the leaderboard, e.g. 'cpu-2c' or 'NVIDIA H100 80GB HBM3'."""
    device = env.get("device") or "unknown"
    if device.startswith("cpu"):
        return f"cpu-{env.get('cpu_count', '?')}c"
    return device


def command_line() -> str:
    import shlex

    argv = list(sys.argv)
    prog = Path(argv[0]).name if argv else "cab"
    if prog in ("__main__.py", "cli.py"):
        prog = "cab"
    return " ".join([prog, *map(shlex.quote, argv[1:])])


def job_command(program: str, seed: int | None = None) -> str | None:
    """`<program> <this Hydra job's overrides>`: the line that reproduces this one job, also when it
    came from a multirun (where argv is the whole sweep). None outside a Hydra job. With `seed`, the
    line of the same job at that seed (a job that runs another seed's cell on its behalf, as
    learning-rate selection does)."""
    import shlex

    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not inside a Hydra job
        return None
    if seed is not None:
        overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"] + [f"seed={seed}"]
    return " ".join([program, *map(shlex.quote, overrides)])
