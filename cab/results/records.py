"""Result records: one JSON file per job, the source of truth (docs/record-schema.md).

A record is written atomically (to a temporary file in the same directory, then renamed), named
`<run_id>.json`, where `run_id` hashes the resolved config (seed included) less the keys that do
not change the result (where it is written, whether to force, how it is logged). What a record says
about its environment is built by `cab.results.environment`; its status and error, when the job
failed, by `cab.results.status`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA = "cab.result/1"
STATUSES = ("ok", "unsupported", "failed", "oom", "nan", "timeout")
KINDS = ("train", "efficiency")
# the host allocator policy a train record ran under (`allocator`, optional: null or absent in older records)
ALLOCATORS = ("glibc_held", "glibc_default", "system", "cuda_caching")
REQUIRED = (
    "schema", "kind", "run_id", "status", "attention", "pattern", "task", "seed", "metrics", "metric_info",
    "cost", "config", "env", "command", "started_at", "duration_s", "error",
)
# config keys that do not change what a run computes
NON_SEMANTIC_KEYS = ("results_dir", "force", "retry_failed", "logger", "threads", "leaderboard_out", "cpu_allocator",
                     "save_checkpoint")


# nested keys that only say where inputs live
NON_SEMANTIC_PATHS = (("task", "data_dir"),)


def semantic_config(config: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config less the keys that do not change what a run computes (and `drop`)."""
    semantic = {k: v for k, v in config.items() if k not in NON_SEMANTIC_KEYS and k not in drop}
    if isinstance(semantic.get("distributed"), dict) and not semantic["distributed"].get("strategy"):
        del semantic["distributed"]  # one process, the default: the same run as before the key existed
    for outer, inner in NON_SEMANTIC_PATHS:
        if isinstance(semantic.get(outer), dict) and inner in semantic[outer]:
            semantic[outer] = {k: v for k, v in semantic[outer].items() if k != inner}
    return semantic


def run_id_of(config: dict[str, Any]) -> str:
    blob = json.dumps(semantic_config(config), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
    if record.get("allocator") not in (None, *ALLOCATORS):
        problems.append(f"unknown allocator {record.get('allocator')!r} (expected one of {', '.join(ALLOCATORS)})")
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
