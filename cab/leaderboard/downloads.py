"""The full data set behind a built site, as files a reader downloads from any page.

- `records.jsonl`: every record the site was built from, one JSON object per line, as it was read
  (less nothing; `<`, `>` and `&` escaped as \\u003c etc., the same values, so no browser can take
  the file for HTML);
- `runs.csv`: the training runs, one row per run (that is, per run and seed), with its run id; a
  column is named by its place in the record (`metrics.accuracy`, `cost.flops_per_example`,
  `config.attention.window`, `env.git_dirty`), so the CSV and the JSON use the same names;
- `efficiency.csv`: the efficiency runs, one row per run and measured length
  (`efficiency.points.time_median_s`, ...).

A cell that a spreadsheet would evaluate (a string starting with `=`, `+`, `-` or `@` that is not a
number) is written with a leading `'`, as the site's view downloads do.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable

from cab.leaderboard.data import hardware_of, scale_of

RUN_COLUMNS = ("run_id", "kind", "status", "attention", "pattern", "task", "task_variant", "seed", "scale", "hardware",
               "primary_metric")
TAIL_COLUMNS = ("env.git_commit", "env.git_dirty", "env.device", "env.threads", "env.cab_version", "env.torch",
                "command", "started_at", "duration_s", "reason", "error.type", "error.message")
EFFICIENCY_COLUMNS = ("run_id", "status", "attention", "pattern", "scale", "hardware", "efficiency.direction", "efficiency.mode",
                      "efficiency.batch", "efficiency.num_heads", "efficiency.dim", "efficiency.dtype", "efficiency.threads",
                      "efficiency.world_size", "efficiency.strategy")
POINT_COLUMNS = ("length", "status", "time_median_s", "time_iqr_s", "peak_memory_bytes", "flops", "error")


def original(record: dict[str, Any]) -> dict[str, Any]:
    """The record as stored: without the loader's private keys, the task's name as written."""
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    if "_task" in record:
        out["task"] = record["_task"]
    return out


def _escape(text: str) -> str:
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    lines = [_escape(json.dumps(original(r), ensure_ascii=False, separators=(",", ":"), default=str, sort_keys=False))
             for r in records]
    text = "\n".join(lines) + ("\n" if lines else "")
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, int):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if text[:1] in ("=", "+", "-", "@"):
        try:
            float(text)
        except ValueError:
            text = "'" + text
    return text


def _get(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _write_csv(header: list[str], rows: list[list[Any]], path: Path) -> int:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    text = buf.getvalue()
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))


def write_runs_csv(records: Iterable[dict[str, Any]], path: Path) -> int:
    """One row per training run (= per run and seed)."""
    runs = sorted((original(r) for r in records if r.get("kind") == "train"),
                  key=lambda r: (scale_of(r), hardware_of(r), str(r.get("pattern")), str(r.get("task")), str(r.get("attention")),
                                 r.get("seed") if isinstance(r.get("seed"), int) else -1, str(r.get("run_id"))))
    dynamic: dict[str, None] = {}
    for prefix, getter in (("metrics", lambda r: r.get("metrics")), ("reference_metrics", lambda r: r.get("reference_metrics")),
                           ("cost", lambda r: r.get("cost")),
                           ("config.attention", lambda r: (r.get("config") or {}).get("attention") if isinstance(r.get("config"), dict) else None),
                           ("config.task", lambda r: (r.get("config") or {}).get("task") if isinstance(r.get("config"), dict) else None),
                           ("config.trainer", lambda r: (r.get("config") or {}).get("trainer") if isinstance(r.get("config"), dict) else None)):
        names = sorted({k for r in runs if isinstance(getter(r), dict) for k in getter(r) if isinstance(k, str)})
        for k in names:
            if prefix.startswith("config.") and k == "name":
                continue
            dynamic[f"{prefix}.{k}"] = None
    header = [*RUN_COLUMNS, *dynamic, *TAIL_COLUMNS]
    rows = []
    for r in runs:
        derived = {"scale": scale_of(r), "hardware": hardware_of(r)}
        row = [derived[c] if c in derived else r.get(c) for c in RUN_COLUMNS]
        row += [_get(r, c) for c in dynamic]
        err = r.get("error")
        for c in TAIL_COLUMNS:
            if not c.startswith("error."):
                row.append(_get(r, c))
            elif isinstance(err, dict):
                row.append(err.get(c.split(".", 1)[1]))
            else:  # an error stored as a plain string is its message
                row.append(str(err) if err and c == "error.message" else None)
        rows.append(row)
    return _write_csv(header, rows, path)


def write_efficiency_csv(records: Iterable[dict[str, Any]], path: Path) -> int:
    """One row per efficiency run and measured length."""
    runs = sorted((original(r) for r in records if r.get("kind") == "efficiency"),
                  key=lambda r: (hardware_of(r), str(r.get("pattern")), str(r.get("attention")), str(r.get("run_id"))))
    header = [*EFFICIENCY_COLUMNS, *(f"efficiency.points.{c}" for c in POINT_COLUMNS)]
    rows = []
    for r in runs:
        eff = r.get("efficiency") if isinstance(r.get("efficiency"), dict) else {}
        head = []
        for c in EFFICIENCY_COLUMNS:
            if c == "scale":
                head.append(scale_of(r))
            elif c == "hardware":
                head.append(hardware_of(r))
            elif c in ("efficiency.world_size", "efficiency.strategy"):  # distributed runs state them here or at the top
                key = c.split(".", 1)[1]
                head.append(eff.get(key, r.get(key)))
            else:
                head.append(_get(r, c))
        for p in eff.get("points") or [None]:
            rows.append(head + [p.get(c) if isinstance(p, dict) else None for c in POINT_COLUMNS])
    return _write_csv(header, rows, path)
