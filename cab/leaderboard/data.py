"""From result records to the leaderboard's tables: seeds aggregated, statuses kept, CAB-style z-scores.

Pure data, no HTML: `cab.leaderboard.site` writes what this module computes into the static site, and
`cab.leaderboard.markdown` into markdown tables.

Anchors:
- CAB's compositional index (Zhang et al., ICML 2023, `scripts/compositional_index/compositional_index.py`):
  z = w·(x − μ)/σ per metric (w = +1 if higher is better, −1 otherwise), averaged per task, then the
  tasks of a pattern averaged with equal weight. CAB hard-codes μ and σ; we freeze them in a
  versioned JSON file (leaderboard/normalisation-v2.json) so that adding a model never moves everyone
  else's score, and we always show the per-task scores beside the aggregate.
- HELM's table model: each cell has a sortable value, a display value and links to the runs behind it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from cab.gates import GATES, Gate, judge
from cab.results.environment import hardware_label
from cab.results.records import SCHEMA, iter_records, semantic_config

NORMALISATION_SCHEMA = "cab.normalisation/1"
# A cell with no successful seed shows the most informative failure: the attention's own stated
# reason first, then the failures that say something about the mechanism, then generic crashes.
STATUS_PRIORITY = ("unsupported", "oom", "timeout", "nan", "failed")
# Metrics left out of the aggregate when a normalisation is frozen: the training objective duplicates
# the task's evaluation metrics, and sliced metrics ("accuracy/seq_len=256") are already in the mean.
NOT_AGGREGATED = ("loss",)
SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def _number(value: Any) -> float | None:
    """A finite float, or None (bools, strings, NaN, inf and nested objects are not metric values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: Any, limit: int = 20000) -> str | None:
    if value is None:
        return None
    return (value if isinstance(value, str) else json.dumps(value, default=str))[:limit]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None for one value)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def error_message(record: dict[str, Any]) -> str | None:
    """One line for a failed run: the error's message (records store {type, message, traceback})."""
    err = record.get("error")
    if err is None:
        return None
    if isinstance(err, dict):
        msg = err.get("message") or err.get("type") or json.dumps(err, default=str)
        if err.get("type") and err.get("message"):
            msg = f"{err['type']}: {err['message']}"
        return _text(msg, 500)
    return _text(str(err).strip().splitlines()[0] if str(err).strip() else str(err), 500)


# ---------------------------------------------------------------------------------------------------
# loading


def load_records(results_dir: str | Path, warn=None) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Valid records under `results_dir` (recursively), and (path, problem) for every file skipped.

    On top of `cab.results.records.validate`, the fields the leaderboard groups by must be strings: a record
    is untrusted input, and a name that is a list or a number is malformed rather than a new row.
    Two files with the same run_id (a results folder copied twice) keep the later `started_at`.
    """
    records: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, str]] = []

    def skip(path: Path, problem: str) -> None:
        skipped.append((str(path), problem))
        if warn:
            warn(f"skipped {path}: {problem}")

    for path, record, problems in iter_records(results_dir):
        if record is None:
            skip(path, "; ".join(problems) or "invalid record")
            continue
        bad = [k for k in ("attention", "pattern", "run_id") if not isinstance(record.get(k), str) or not record.get(k)]
        if record.get("kind") == "train" and not isinstance(record.get("task"), str):
            bad.append("task")
        if bad:
            skip(path, f"field(s) {', '.join(bad)} must be non-empty strings")
            continue
        if record.get("kind") == "efficiency" and not isinstance(record.get("efficiency"), dict) and record.get("status") == "ok":
            skip(path, "efficiency record without an 'efficiency' object")
            continue
        if record.get("task_variant") and isinstance(record.get("task"), str):
            # e.g. gCOG's splits: one column per variant
            record = dict(record, task=f"{record['task']}/{record['task_variant']}", _task=record["task"])
        run_id = record["run_id"]
        if not SAFE_ID.match(run_id):
            # the id goes into URLs and file names: derive a safe one from the unsafe one
            run_id = "x" + hashlib.sha256(run_id.encode()).hexdigest()[:16]
            record = dict(record, run_id=run_id)
        record["_path"] = str(path)
        previous = records.get(run_id)
        if previous is not None:
            keep, drop = (record, previous) if str(record.get("started_at")) >= str(previous.get("started_at")) else (previous, record)
            if warn:
                warn(f"duplicate run_id {run_id}: kept {keep['_path']}, ignored {drop['_path']}")
            records[run_id] = keep
        else:
            records[run_id] = record
    return list(records.values()), skipped


def scale_of(record: dict[str, Any]) -> str:
    scale = record.get("scale")
    if not isinstance(scale, str) or not scale:
        trainer = (record.get("config") or {}).get("trainer") if isinstance(record.get("config"), dict) else None
        scale = trainer.get("name") if isinstance(trainer, dict) else None
    return scale if isinstance(scale, str) and scale else "unknown"


def hardware_of(record: dict[str, Any]) -> str:
    hw = record.get("hardware")
    if isinstance(hw, str) and hw:
        return hw
    env = record.get("env")
    return hardware_label(env) if isinstance(env, dict) and env else "unknown"


def hparams_of(record: dict[str, Any]) -> dict[str, Any]:
    """The attention's hyperparameters from the resolved config (config.attention less its name)."""
    config = record.get("config")
    att = config.get("attention") if isinstance(config, dict) else None
    if not isinstance(att, dict):
        return {}
    return {k: v for k, v in att.items() if k != "name"}


def _config_key(record: dict[str, Any]) -> str:
    """The run's configuration less its seed and the keys that do not change results: seeds of one
    configuration are aggregated into one cell."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    semantic = semantic_config(config, drop=("seed", "debug"))
    return hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _variant_labels(hparam_sets: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Short labels naming only the hyperparameters that differ between variants of one attention."""
    if len(hparam_sets) <= 1:
        return {key: "" for key in hparam_sets}
    keys = sorted({k for hp in hparam_sets.values() for k in hp})
    differing = [k for k in keys if len({json.dumps(hp.get(k), sort_keys=True, default=str) for hp in hparam_sets.values()}) > 1]
    return {key: ", ".join(f"{k}={json.dumps(hp.get(k), default=str)}" for k in differing) for key, hp in hparam_sets.items()}


# ---------------------------------------------------------------------------------------------------
# training records -> overview tables


def build_tables(records: Iterable[dict[str, Any]], normalisation: dict[str, Any] | None, warn=None) -> list[dict[str, Any]]:
    """One table per (scale, hardware, pattern): rows = attention variants, columns = tasks.

    Each cell aggregates the seeds of one configuration: per metric [mean, std, n] over the `ok` seeds,
    the count of each status, the runs (id, seed, status) and, where no seed succeeded, the status to
    show with its reason or error message. Reference rows come from the records' `reference_metrics`.
    """
    records = [r for r in records if r.get("kind") == "train"]
    # `unsupported` is a property of attention × pattern, whatever the task's variant; such records
    # never build the task, so they carry no variant: show them in each variant's column
    variants: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if "/" in r["task"]:
            base, variant = r["task"].split("/", 1)
            variants[base].add(variant)
    spread = []
    for r in records:
        if r["status"] == "unsupported" and r["task"] in variants:
            spread += [dict(r, task=f"{r['task']}/{v}") for v in sorted(variants[r["task"]])]
        else:
            spread.append(r)
    by_table: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in spread:
        by_table[(scale_of(r), hardware_of(r), r["pattern"])].append(r)
    tables = []
    for (scale, hardware, pattern), recs in sorted(by_table.items()):
        tables.append(_build_table(scale, hardware, pattern, recs, normalisation, warn))
    return tables


def _build_table(scale, hardware, pattern, recs, normalisation, warn) -> dict[str, Any]:
    # rows: attention + its hyperparameters
    hp_sets: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in recs:
        hp = hparams_of(r)
        hp_sets[r["attention"]][json.dumps(hp, sort_keys=True, default=str)] = hp
    labels = {att: _variant_labels(sets) for att, sets in hp_sets.items()}

    cells_raw: dict[tuple[str, str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in recs:
        hp_key = json.dumps(hparams_of(r), sort_keys=True, default=str)
        cells_raw[(r["attention"], hp_key, r["task"])][_config_key(r)].append(r)

    tasks: dict[str, dict[str, Any]] = {}
    row_keys: dict[tuple[str, str], dict[str, Any]] = {}
    cells = []
    shown: dict[tuple[str, str, str], list[dict[str, Any]]] = {}  # the seeds behind each cell
    for (attention, hp_key, task), groups in sorted(cells_raw.items()):
        # several configurations in one cell (e.g. a task size overridden at the same scale): show the
        # one with most successful seeds, latest first on ties, and say how many others there are
        ranked = sorted(groups.values(), key=lambda g: (sum(x["status"] == "ok" for x in g), max(str(x.get("started_at")) for x in g)), reverse=True)
        chosen = ranked[0]
        if len(ranked) > 1 and warn:
            warn(f"{scale}/{hardware}/{pattern}/{task}/{attention}: {len(ranked)} configurations; showing the one with most ok seeds")
        row_id = f"{attention}\x00{hp_key}"
        row_keys.setdefault((attention, hp_key), {"id": row_id, "attention": attention, "variant": labels[attention][hp_key]})
        shown[(attention, hp_key, task)] = chosen
        cell = _cell(chosen)
        cell.update(row=row_id, task=task, other_configs=len(ranked) - 1)
        cells.append(cell)
        info = tasks.setdefault(task, {"primary_metric": None, "metric_info": {}, "references": {}})
        for r in chosen:
            _merge_task_info(info, r)

    for info in tasks.values():
        if info["primary_metric"] is None:
            info["primary_metric"] = next(iter(info["metric_info"]), None)
        info["references"] = {name: sum(by_seed.values()) / len(by_seed) for name, by_seed in info["references"].items()}
    for task, info in tasks.items():
        info["gate"] = column_gate(task, [r for r in recs if r["task"] == task], shown, labels, warn)
        info["trivial_baselines"] = trivial_baselines(info)
    rows = sorted(row_keys.values(), key=lambda x: (x["attention"], x["variant"]))
    table = {"scale": scale, "hardware": hardware, "pattern": pattern, "tasks": dict(sorted(tasks.items())),
             "rows": rows, "cells": cells}
    table["aggregate"] = aggregate_table(table, normalisation)
    table["references"] = _reference_rows(tasks)
    return table


def gate_spec(task: str, records: list[dict[str, Any]], warn=None) -> tuple[Gate | None, str | None, str | None]:
    """(gate, source, problem) for one column: the gate its records state (`gate`, written by the
    runner), preferring the reference's own records and the latest among them; else, for records
    written before the field existed, the built-in gate of the task (`cab.gates.GATES`, by the task's
    name less its variant). A record's gate that is not a gate is a problem, not a reason to guess."""
    stated: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for r in records:
        if r.get("gate") is not None:
            key = json.dumps(r["gate"], sort_keys=True, default=str)
            stated.setdefault(key, (r["gate"], []))[1].append(r)
    if not stated:
        gate = GATES.get(task.split("/", 1)[0])
        return gate, ("cab.gates" if gate else None), None
    candidates, problems = [], []
    for raw, recs in stated.values():
        try:
            gate = Gate.from_dict(raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{_text(raw, 200)}: {exc}")
            continue
        own = [r for r in recs if r.get("attention") == gate.reference]
        candidates.append((bool(own), max(str(r.get("started_at")) for r in (own or recs)), gate))
    if not candidates:
        return None, "record", "the records' gate is malformed (" + "; ".join(problems)[:300] + ")"
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    if len(candidates) > 1 and warn:
        warn(f"{task}: the records state {len(candidates)} different gates; judging by the reference's latest")
    return candidates[0][2], "record", None


def column_gate(task: str, records: list[dict[str, Any]], shown: dict[tuple[str, str, str], list[dict[str, Any]]],
                labels: dict[str, dict[str, str]], warn=None) -> dict[str, Any]:
    """Is this column learnt? The verdict of its gate (`cab.gates.judge`) on the seeds of the reference's
    cell as shown (one configuration; with several hyperparameter settings of the reference, the one
    with most finished seeds), plus where the gate came from (`source`: "record" or "cab.gates")."""
    gate, source, problem = gate_spec(task, records, warn)
    if problem:
        return {"status": "unknown", "reason": problem, "gate": None, "source": source, "seeds": [], "mean": None, "std": None, "n": 0}
    ref_cells = sorted(((hp, recs) for (att, hp, t), recs in shown.items() if gate and att == gate.reference and t == task),
                       key=lambda c: (-sum(r["status"] == "ok" for r in c[1]), -len(c[1]), c[0]))
    label = None
    if ref_cells:
        variant = labels.get(gate.reference, {}).get(ref_cells[0][0], "")
        label = gate.reference + (f" [{variant}]" if variant else "")
    verdict = judge(gate, ref_cells[0][1] if ref_cells else [], label)
    verdict["source"] = source
    verdict["description"] = gate.describe() if gate else None
    return verdict


def _merge_task_info(info: dict[str, Any], r: dict[str, Any]) -> None:
    if info["primary_metric"] is None and isinstance(r.get("primary_metric"), str):
        info["primary_metric"] = r["primary_metric"]
    mi = r.get("metric_info")
    if isinstance(mi, dict):
        for name, meta in mi.items():
            if isinstance(name, str) and isinstance(meta, dict) and name not in info["metric_info"]:
                info["metric_info"][name] = {
                    "higher_is_better": bool(meta.get("higher_is_better", True)),
                    "description": _text(meta.get("description"), 1000) or "",
                }
    refs = r.get("reference_metrics")
    if isinstance(refs, dict):
        for name, value in refs.items():
            v = _number(value)
            if isinstance(name, str) and v is not None:
                # baselines can depend on the seed (a seed draws gCOG's test set): one value per seed
                info["references"].setdefault(name, {}).setdefault(r.get("seed"), v)
    for name, value in (r.get("metrics") or {}).items():
        if isinstance(name, str) and name not in info["metric_info"] and _number(value) is not None:
            info["metric_info"][name] = {"higher_is_better": True, "description": "(no metric_info in the record)"}


def _cell(group: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in group if r["status"] == "ok"]
    counts: dict[str, int] = defaultdict(int)
    for r in group:
        counts[r["status"]] += 1
    metrics: dict[str, list] = {}
    names = sorted({k for r in ok for k in (r.get("metrics") or {}) if isinstance(k, str)})
    for name in names:
        values = [v for r in ok if (v := _number((r.get("metrics") or {}).get(name))) is not None]
        if values:
            mean, std = mean_std(values)
            metrics[name] = [mean, std, len(values)]
    cost: dict[str, float] = {}
    for key in ("flops_per_example", "wall_s", "tokens_per_second", "state_size", "peak_memory_bytes", "params"):
        values = [v for r in ok if isinstance(r.get("cost"), dict) and (v := _number(r["cost"].get(key))) is not None]
        if values:
            cost[key] = sum(values) / len(values)
    status = "ok" if ok else next((s for s in STATUS_PRIORITY if counts.get(s)), group[0]["status"])
    note = None
    if not ok:
        first = next(r for r in group if r["status"] == status)
        note = _text(first.get("reason"), 500) if status == "unsupported" else error_message(first)
        if status == "unsupported" and not note:
            note = "no reason recorded"
    # [run id, seed, status, 1 if it ran from a working tree with uncommitted changes else 0]
    runs = sorted(([r["run_id"], r.get("seed") if isinstance(r.get("seed"), int) else None, r["status"], int(is_dirty(r))]
                   for r in group), key=lambda x: (x[1] is None, x[1] if x[1] is not None else 0, x[0]))
    return {"status": status, "counts": dict(counts), "metrics": metrics, "cost": cost, "note": note, "runs": runs,
            "dirty": sum(x[3] for x in runs)}


def is_dirty(record: dict[str, Any]) -> bool:
    """Did the run come from a working tree with uncommitted changes (`env.git_dirty`)? Then its
    commit does not pin the code that produced it, and the site flags its numbers."""
    env = record.get("env")
    return isinstance(env, dict) and env.get("git_dirty") is True


def _reference_rows(tasks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Baselines (majority class, unigram, last value, chance) as rows: {label, values: {task: {metric: value}}}.

    A task reports them as `reference_metrics: {name: value}`; a name that starts with one of the
    task's metric names plus "_" belongs to that metric ("accuracy_guess_a_context_value" is the
    accuracy of guessing a context value); any other name is taken to be in the primary metric, unless
    it holds a "/": such a name ("novel_instruction_fraction/distractors_10") describes the task's
    data rather than scoring a baseline, and stays on the run page only."""
    rows: dict[str, dict[str, Any]] = {}
    for task, info in tasks.items():
        for name, value in info["references"].items():
            label, metric = reference_label(name, info)
            if label is None:
                continue
            row = rows.setdefault(label, {"label": label, "values": {}})
            row["values"].setdefault(task, {})[metric] = value
    return [rows[k] for k in sorted(rows)]


def reference_label(name: str, info: dict[str, Any]) -> tuple[str | None, str | None]:
    """(row label, metric) of a `reference_metrics` name in a column: "mse_last_value" is the mse of
    "last value"; a name with no metric prefix is in the primary metric; a name with a "/" describes
    the data, not a baseline (None, None)."""
    metric = next((m for m in sorted(info["metric_info"], key=len, reverse=True) if name.startswith(m + "_")), None)
    if metric is None and "/" in name:
        return None, None
    label = name[len(metric) + 1:] if metric else name
    return label.replace("_", " "), metric or info["primary_metric"]


def trivial_baselines(info: dict[str, Any]) -> list[str] | None:
    """The reference rows a column's gate counts as trivial (chance, majority class, unigram,
    repeat-last), by label; None where the column has no gate to say which are trivial."""
    gate = (info.get("gate") or {}).get("gate")
    if not isinstance(gate, dict) or not isinstance(gate.get("baselines"), list):
        return None
    return sorted({label for name in gate["baselines"] if isinstance(name, str) and (label := reference_label(name, info)[0])})


# ---------------------------------------------------------------------------------------------------
# the aggregate (CAB's compositional index with frozen constants)


def zscore(value: float, mean: float, std: float, higher_is_better: bool) -> float:
    """CAB's z_j = w_j·(x_j − μ_j)/σ_j with w = +1 (higher is better) or −1."""
    return (1.0 if higher_is_better else -1.0) * (value - mean) / std


def normalisation_for(normalisation: dict[str, Any] | None, scale: str, pattern: str) -> dict[str, Any]:
    """task -> metric -> {mean, std, higher_is_better} for one scale and pattern ({} if none frozen)."""
    if not normalisation:
        return {}
    return ((normalisation.get("constants") or {}).get(scale) or {}).get(pattern) or {}


def aggregate_table(table: dict[str, Any], normalisation: dict[str, Any] | None) -> dict[str, Any]:
    """Per row: the z-score of each task (mean over that task's frozen metrics) and the pattern
    aggregate (mean over the frozen tasks, equal weight). A row missing a frozen task (unsupported,
    failed, not run) gets a partial aggregate flagged complete=False, which sorts after complete ones.

    A column whose reference gate says it is not learnt (`tasks[t]["gate"]`, `cab.gates`) is left
    out, constants or not: `excluded` names those columns with the reason."""
    consts = normalisation_for(normalisation, table["scale"], table["pattern"])
    excluded = {task: (info.get("gate") or {}).get("reason") or "" for task, info in table["tasks"].items()
                if (info.get("gate") or {}).get("status") == "not_learnt"}
    consts = {task: metrics for task, metrics in consts.items() if task not in excluded}
    out = {"version": (normalisation or {}).get("version"), "tasks": sorted(consts), "excluded": dict(sorted(excluded.items())),
           "rows": {}}
    if not consts:
        return out
    cells = {(c["row"], c["task"]): c for c in table["cells"]}
    for row in table["rows"]:
        task_scores: dict[str, float] = {}
        for task, metrics in consts.items():
            cell = cells.get((row["id"], task))
            if not cell or cell["status"] != "ok":
                continue
            zs = [zscore(cell["metrics"][m][0], c["mean"], c["std"], c["higher_is_better"])
                  for m, c in metrics.items() if m in cell["metrics"] and c.get("std")]
            if zs:
                task_scores[task] = sum(zs) / len(zs)
        score = sum(task_scores.values()) / len(task_scores) if task_scores else None
        out["rows"][row["id"]] = {"score": score, "task_scores": task_scores,
                                  "complete": len(task_scores) == len(consts), "tasks_used": len(task_scores)}
    return out


def freeze_normalisation(tables: list[dict[str, Any]], version: int = 1, source: str = "") -> dict[str, Any]:
    """Normalisation constants from the current records: for every scale × pattern × task × metric, the
    mean and population standard deviation (as CAB: over the evaluated models) of the per-attention
    seed means. Metrics with fewer than two attentions or zero spread are left out (σ would be 0)."""
    constants: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    attentions_used: dict[str, dict[str, list[str]]] = {}
    for table in tables:
        if table["scale"] in constants and table["pattern"] in constants[table["scale"]]:
            # the same scale measured on another machine: accuracy does not depend on hardware, so the
            # first (sorted) hardware's table defines the constants
            continue
        row_names = {r["id"]: r["attention"] + (f" [{r['variant']}]" if r["variant"] else "") for r in table["rows"]}
        per_pattern: dict[str, dict[str, Any]] = {}
        used: set[str] = set()
        for task, info in table["tasks"].items():
            for metric, meta in info["metric_info"].items():
                if metric in NOT_AGGREGATED or "/" in metric:
                    continue
                values = [(c["row"], c["metrics"][metric][0]) for c in table["cells"]
                          if c["task"] == task and c["status"] == "ok" and metric in c["metrics"]]
                if len(values) < 2:
                    continue
                xs = [v for _, v in values]
                mean = sum(xs) / len(xs)
                std = math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))
                if std <= 1e-12:
                    continue
                per_pattern.setdefault(task, {})[metric] = {
                    "mean": mean, "std": std, "higher_is_better": meta["higher_is_better"], "n_attentions": len(xs)}
                used.update(row_names[r] for r, _ in values)
        if per_pattern:
            constants.setdefault(table["scale"], {})[table["pattern"]] = per_pattern
            attentions_used.setdefault(table["scale"], {})[table["pattern"]] = sorted(used)
    return {
        "schema": NORMALISATION_SCHEMA,
        "version": version,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "method": ("z = w*(x - mean)/std per metric (w = +1 if higher is better, -1 otherwise); task score = mean z "
                   "over the task's metrics; aggregate = mean task score over the pattern's tasks (CAB's "
                   "compositional index). mean/std: over attentions' seed means when frozen; population std."),
        "attentions": attentions_used,
        "constants": constants,
    }


def check_normalisation(data: Any) -> list[str]:
    """Problems with a normalisation file (empty list: usable)."""
    if not isinstance(data, dict):
        return ["not a JSON object"]
    problems = []
    if data.get("schema") != NORMALISATION_SCHEMA:
        problems.append(f"unknown schema {data.get('schema')!r} (expected {NORMALISATION_SCHEMA})")
    consts = data.get("constants")
    if not isinstance(consts, dict):
        return problems + ["no 'constants' object"]
    for scale, pats in consts.items():
        for pattern, tasks in (pats or {}).items():
            for task, metrics in (tasks or {}).items():
                for metric, c in (metrics or {}).items():
                    if not isinstance(c, dict) or _number(c.get("mean")) is None or not (_number(c.get("std")) or 0) > 0:
                        problems.append(f"{scale}/{pattern}/{task}/{metric}: needs a number 'mean' and a positive 'std'")
    return problems


# ---------------------------------------------------------------------------------------------------
# efficiency records -> curves and efficiency lengths

EFFICIENCY_BASELINES = ("vanilla", "softmax")


def _efficiency_lengths_fn():
    """`cab.bench.scaling.efficiency_lengths` if this build has it (written by the bench work), else None."""
    try:
        from cab.bench.scaling import efficiency_lengths  # noqa: PLC0415
    except (ImportError, AttributeError):
        return None
    return efficiency_lengths


def _points(eff: dict[str, Any]) -> list[dict[str, Any]]:
    points = []
    for p in eff.get("points") or []:
        if not isinstance(p, dict) or _number(p.get("length")) is None:
            continue
        points.append({
            "length": int(p["length"]),
            "status": p.get("status") if p.get("status") in ("ok", "oom", "failed", "timeout") else "failed",
            "time_median_s": _number(p.get("time_median_s")),
            "time_iqr_s": _number(p.get("time_iqr_s")),
            "peak_memory_bytes": _number(p.get("peak_memory_bytes")),
            "flops": _number(p.get("flops")),
            "error": _text(p.get("error"), 500),
        })
    return sorted(points, key=lambda p: p["length"])


def build_efficiency(records: Iterable[dict[str, Any]], warn=None) -> dict[str, Any]:
    """Efficiency groups: records measured with the same settings on the same hardware, per pattern,
    one curve per attention (the latest record if measured twice), with CAB's efficiency lengths
    against each baseline present (`vanilla`, `softmax`)."""
    groups: dict[str, dict[str, Any]] = {}
    records = [r for r in records if r.get("kind") == "efficiency"]
    # the fits (cab.bench.scaling) are imported only when there is something to fit
    fn = _efficiency_lengths_fn() if records else None
    for r in records:
        eff = r.get("efficiency") if isinstance(r.get("efficiency"), dict) else {}
        settings = efficiency_settings(r, eff)
        hw = hardware_of(r)
        key = json.dumps([hw, settings], sort_keys=True)
        g = groups.setdefault(key, {"hardware": hw, "scale": scale_of(r), "settings": settings, "patterns": {}})
        curves = g["patterns"].setdefault(r["pattern"], {})
        label = r["attention"]
        hp = hparams_of(r)
        if hp:
            label_key = label + json.dumps(hp, sort_keys=True, default=str)
        else:
            label_key = label
        derived = eff.get("derived") if isinstance(eff.get("derived"), dict) else {}
        curve = {"attention": label, "hparams": hp, "run_id": r["run_id"], "status": r["status"],
                 "note": _text(r.get("reason"), 500) if r["status"] == "unsupported" else error_message(r),
                 "started_at": str(r.get("started_at")), "points": _points(eff), "dirty": is_dirty(r),
                 "time_exponent": _number(derived.get("time_exponent")),
                 "memory_exponent": _number(derived.get("memory_exponent"))}
        old = curves.get(label_key)
        if old is None or curve["started_at"] >= old["started_at"]:
            curves[label_key] = curve
    out = []
    for key in sorted(groups):
        g = groups[key]
        patterns = {}
        for pattern, curves in sorted(g["patterns"].items()):
            lines = [curves[k] for k in sorted(curves)]
            _add_variant_labels(lines)
            for line in lines:
                line["efficiency_lengths"] = _lengths(fn, line, lines, warn, g["settings"].get("direction"))
            patterns[pattern] = lines
        out.append({"hardware": g["hardware"], "scale": g["scale"], "settings": g["settings"], "patterns": patterns})
    # with no efficiency records there is nothing to say about lengths either way
    return {"available": fn is not None or not records, "baselines": list(EFFICIENCY_BASELINES), "groups": out}


# The settings that make two efficiency measurements comparable: one group (one set of plots) per
# distinct combination on one machine. The last two are written by distributed (sequence-parallel)
# benchmarks and are only part of a group's settings where a record states them.
EFFICIENCY_SETTINGS = ("direction", "mode", "batch", "num_heads", "dim", "dtype", "threads")
DISTRIBUTED_SETTINGS = ("world_size", "strategy")
# Directions whose cost grows like a forward pass (quadratic for the baselines), where CAB's fitted
# efficiency length means something; others (`decode`: time per generated token against context)
# get the measured crossing only.
FORWARD_DIRECTIONS = (None, "forward", "forward_backward", "backward")


def efficiency_settings(record: dict[str, Any], eff: dict[str, Any]) -> dict[str, Any]:
    """The comparable settings of one efficiency record: numbers and strings only (anything else is
    None), the distributed fields from the efficiency object or the record itself where present."""
    def clean(v):
        return v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None

    settings = {k: clean(eff.get(k)) for k in EFFICIENCY_SETTINGS}
    for k in DISTRIBUTED_SETTINGS:
        v = clean(eff.get(k, record.get(k)))
        if v is not None:
            settings[k] = v
    return settings


def _add_variant_labels(lines: list[dict[str, Any]]) -> None:
    by_name: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for line in lines:
        by_name[line["attention"]][json.dumps(line["hparams"], sort_keys=True, default=str)] = line["hparams"]
    for line in lines:
        labels = _variant_labels(by_name[line["attention"]])
        line["variant"] = labels[json.dumps(line["hparams"], sort_keys=True, default=str)]


def _no_crossing(method: list[dict[str, Any]], base: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    """Why the measured curves have no crossing, for the reader: the method is already cheaper at the
    shortest common length ("below", with that length), or still dearer at the longest ("above")."""
    m = {p["length"]: p[key] for p in method if p["status"] == "ok" and p[key] is not None}
    b = {p["length"]: p[key] for p in base if p["status"] == "ok" and p[key] is not None}
    common = sorted(set(m) & set(b))
    if len(common) < 2:
        return None
    if m[common[-1]] > b[common[-1]]:
        return {"side": "above", "length": common[-1]}
    if all(m[n] <= b[n] for n in common):
        return {"side": "below", "length": common[0]}
    return None


def _lengths(fn, line, lines, warn, direction=None) -> dict[str, Any]:
    """{baseline: {time: {cab_fit, crossing}, memory: {...}}} for each baseline curve in the group.
    CAB's fit (a quadratic baseline against a linear method) is kept for forward-like directions only."""
    if fn is None or line["status"] != "ok":
        return {}
    out = {}
    for base in EFFICIENCY_BASELINES:
        ref = next((x for x in lines if x["attention"] == base and not x["variant"] and x["status"] == "ok"), None)
        if ref is None or ref is line or line["attention"] in EFFICIENCY_BASELINES:
            continue
        entry = {}
        for name, key in (("time", "time_median_s"), ("memory", "peak_memory_bytes")):
            try:
                res = fn(line["points"], ref["points"], key) or {}
                entry[name] = {"cab_fit": _number(res.get("cab_fit")) if direction in FORWARD_DIRECTIONS else None,
                               "crossing": _number(res.get("crossing"))}
                if entry[name]["crossing"] is None:
                    entry[name]["crossing_note"] = _no_crossing(line["points"], ref["points"], key)
            except Exception as exc:  # noqa: BLE001 - one bad fit must not stop the build
                if warn:
                    warn(f"efficiency length of {line['attention']} vs {base} ({name}) failed: {exc}")
                entry[name] = {"cab_fit": None, "crossing": None}
        out[base] = entry
    return out


# ---------------------------------------------------------------------------------------------------
# run pages


def run_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a run page shows: the record less nothing a reader needs, with the derived labels."""
    keep = ("run_id", "kind", "status", "attention", "pattern", "task", "seed", "metrics", "metric_info",
            "primary_metric", "reference_metrics", "gate", "cost", "attention_info", "reason", "config", "env", "command",
            "started_at", "duration_s", "error", "early_stopped_at_step", "efficiency", "lr_selection",
            "validation_metrics", "restored_step", "eval_history", "eval_history_split")
    out = {k: record.get(k) for k in keep if k in record}
    out["scale"] = scale_of(record)
    out["hardware"] = hardware_of(record)
    out["file"] = Path(record.get("_path", "")).name
    out["schema"] = SCHEMA
    return out


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of an ASCII run id (ids are checked against SAFE_ID); the site's JS computes the
    same function to find the data file that holds a run."""
    h = 0x811C9DC5
    for byte in text.encode("ascii"):
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def run_shard(run_id: str, shards: int = 256) -> str:
    return f"{fnv1a(run_id) % shards:02x}"
