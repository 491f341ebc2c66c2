"""Result records: one JSON file per job, the source of truth (docs/record-schema.md).

A record is written atomically (to a temporary file in the same directory, then renamed), named
`<run_id>.json`, where `run_id` hashes the resolved config (seed included) less the keys that do
not change the result (where it is written, whether to force, how it is logged).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "cab.result/1"
STATUSES = ("ok", "unsupported", "failed", "oom", "nan", "timeout")
KINDS = ("train", "efficiency")
REQUIRED = (
    "schema", "kind", "run_id", "status", "attention", "pattern", "task", "seed", "metrics", "metric_info",
    "cost", "config", "env", "command", "started_at", "duration_s", "error",
)
# config keys that do not change what a run computes
NON_SEMANTIC_KEYS = ("results_dir", "force", "retry_failed", "logger", "threads", "leaderboard_out")


# nested keys that only say where inputs live
NON_SEMANTIC_PATHS = (("task", "data_dir"),)


def semantic_config(config: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config less the keys that do not change what a run computes (and `drop`)."""
    semantic = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS and k not in drop}
    for outer, inner in NON_SEMANTIC_PATHS:
        if isinstance(semantic.get(outer), dict) and inner in semantic[outer]:
            semantic[outer] = {k: v for k, v in semantic[outer].items() if k != inner}
    return semantic


def run_id_of(config: dict[str, Any]) -> str:
    blob = json.dumps(semantic_config(config), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
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

        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
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


def job_command(program: str) -> str | None:
    """`<program> <this Hydra job's overrides>`: the line that reproduces this one job, also when it
    came from a multirun (where argv is the whole sweep). None outside a Hydra job."""
    import shlex

    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not inside a Hydra job
        return None
    return " ".join([program, *map(shlex.quote, overrides)])


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    """Write `record` as `<results_dir>/<run_id>.json`, atomically."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    target = results_dir / f"{record['run_id']}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{record['run_id']}.", suffix=".tmp", dir=results_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=False, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_record(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def validate(record: Any) -> list[str]:
    """Problems with a record (empty list: valid)."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = [f"missing field {k!r}" for k in REQUIRED if k not in record]
    if record.get("schema") != SCHEMA:
        problems.append(f"unknown schema {record.get('schema')!r} (expected {SCHEMA})")
    if record.get("kind") not in KINDS:
        problems.append(f"unknown kind {record.get('kind')!r}")
    if record.get("status") not in STATUSES:
        problems.append(f"unknown status {record.get('status')!r}")
    if not isinstance(record.get("metrics", {}), dict):
        problems.append("metrics is not an object")
    return problems


def iter_records(results_dir: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None, list[str]]]:
    """(path, record or None, problems) for every *.json under `results_dir`, recursively, except
    hidden files and folders: a sweep's crash markers (`.running/`) and Hydra's logs (`.hydra/`)
    are not records, and a site built while a sweep runs must not report them as malformed."""
    root = Path(results_dir)
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            record = read_record(path)
        except (OSError, ValueError) as exc:
            yield path, None, [f"unreadable: {exc}"]
            continue
        problems = validate(record)
        yield path, (record if not problems else None), problems
