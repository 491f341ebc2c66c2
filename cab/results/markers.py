"""Crash markers: a job killed before it could write its record still leaves a `failed` record.

A job writes `<results_dir>/.running/<run_id>.json` (host, pid, the record so far) before it trains
and removes it after its record is written. A marker whose process is gone means the job died
where Python could not catch it (SIGKILL, the kernel's OOM killer, a segfault): the next job that
starts in the same results directory, the end of a sweep, or a resume turns such markers into
records with status `failed` and error "crashed", so the leaderboard shows the cell instead of
silently missing it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from cab.results.records import write_record

MARKERS = ".running"


def marker_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / MARKERS / f"{run_id}.json"


def write_marker(record: dict[str, Any], results_dir: str | Path, max_seconds: float | None) -> Path:
    path = marker_path(results_dir, record["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
                               "max_seconds": max_seconds or 0, "record": record}, default=str))
    os.replace(tmp, path)
    return path


def remove_marker(results_dir: str | Path, run_id: str) -> None:
    marker_path(results_dir, run_id).unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(marker: dict[str, Any], assume_all_done: bool) -> bool:
    if assume_all_done:
        return True
    if marker.get("host") == socket.gethostname():
        return not _process_alive(int(marker.get("pid", -1)))
    # another host (a cluster node): stale only once far past the job's own time limit
    limit = float(marker.get("max_seconds") or 0)
    return bool(limit) and time.time() - float(marker.get("started", 0)) > 2 * limit + 600


def reconcile_crashed(results_dir: str | Path, assume_all_done: bool = False) -> list[str]:
    """Turn markers of dead jobs into `failed` records; returns their run_ids."""
    folder = Path(results_dir) / MARKERS
    if not folder.is_dir():
        return []
    crashed = []
    for path in sorted(folder.glob("*.json")):
        try:
            marker = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if marker.get("pid") == os.getpid() or not _is_stale(marker, assume_all_done):
            continue
        record = dict(marker["record"])
        if (Path(results_dir) / f"{record['run_id']}.json").exists():
            path.unlink(missing_ok=True)
            continue
        record["status"] = "failed"
        record["error"] = {
            "type": "Crashed",
            "message": f"crashed: the job's process (pid {marker.get('pid')} on {marker.get('host')}) died before "
                       "writing its record (killed, out of memory or a segfault)",
            "traceback": "",
        }
        record["duration_s"] = round(time.time() - float(marker.get("started", time.time())), 3)
        write_record(record, results_dir)
        path.unlink(missing_ok=True)
        crashed.append(record["run_id"])
    return crashed
