"""Mechanism pages and the compare view: what each attention is, and how it did everywhere.

What an attention *is* comes from the registry, so a plugin gets a page without any site work:
its family and paper (`@register_attention(..., family=, paper=)`), the patterns it supports with
the stated reason for each it does not, its default hyperparameters and its docstring (built-in
modules start it with the paper line; a plugin without metadata shows its docstring alone).
An attention seen in the records but not registered in this build (records copied from a machine
with another plugin) still gets a page, from what its records say.

How it *did* comes from the tables already aggregated by `cab.leaderboard.data`: per scale ×
hardware × pattern × task, its cell (mean, std, n over seeds, or the status and its reason), the
column's reference gate, the reference mechanism's cell and the trivial baselines beside it, and its
rank in the column; from the efficiency groups, its curves with the `softmax` and `vanilla` curves
to compare against; from the records, the hyperparameters it ran with and its recurrent state size.

Pure data, like `data`: `cab.leaderboard.site` writes it as data/mechanisms.js (the list) and one
data/mech/<file>.js per mechanism (read by mechanism.html and compare.html).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from typing import Any, Iterable

from cab.leaderboard.data import EFFICIENCY_BASELINES, SAFE_ID, _number, _text, hparams_of, is_dirty, scale_of

PATTERNS = ("noncausal_self", "causal_self", "noncausal_cross", "causal_cross")
BUILTIN_PREFIX = "cab.attentions."


# A paragraph that starts like this is about the implementation (cab.ops, the port, its reference
# form), not about what the mechanism is.
IMPLEMENTATION_NOTE = re.compile(r"^((ops|one op|one call|in ops|port|reference|implementation|cost|flops|speed|note|recurrent form|decod)\b|\S{1,6} = )", re.I)


def split_docstring(doc: str) -> tuple[str, str]:
    """(citation, summary): the docstring's first paragraph on one line (built-ins: the paper line),
    and what the mechanism is: the first prose paragraph after it (indented paragraphs are formulas,
    implementation notes are skipped), else the first paragraph itself."""
    paras = [p for p in re.split(r"\n[ \t]*\n", (doc or "").strip("\n")) if p.strip()]
    if not paras:
        return "", ""

    def one_line(p: str) -> str:
        return " ".join(line.strip() for line in p.splitlines())

    citation = one_line(paras[0])
    summary = next((one_line(p) for p in paras[1:] if not p.startswith((" ", "\t")) and not IMPLEMENTATION_NOTE.match(p.strip())), citation)
    return citation, summary


def file_id(name: str) -> str:
    """The data file of a mechanism: its name where that is a safe file name, else a hash of it
    (names come from records, which are untrusted)."""
    return name if SAFE_ID.match(name) else "x" + hashlib.sha256(name.encode()).hexdigest()[:16]


def registry_metadata(names: Iterable[str], warn=None) -> dict[str, dict[str, Any]]:
    """name -> what the registry says about it, for the names registered in this build. Loading the
    registry imports every attention module (and torch); if that fails, the pages fall back to the
    records, and the build says why once."""
    try:
        from cab.registry import FAMILIES, attention_spec, list_attentions  # noqa: PLC0415

        registered = set(list_attentions())
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the build
        if warn:
            warn(f"attention metadata unavailable ({type(exc).__name__}: {exc}); mechanism pages show what the records say")
        return {}
    out = {}
    for name in names:
        if name not in registered:
            continue
        spec = attention_spec(name)
        doc = spec.docstring()
        citation, summary = split_docstring(doc)
        out[name] = {
            "registered": True,
            "module": spec.module,
            "class": spec.cls.__name__,
            "plugin": not spec.module.startswith(BUILTIN_PREFIX),
            "family": spec.family,
            "family_text": FAMILIES.get(spec.family) if spec.family else None,
            "paper": spec.paper.as_dict() if spec.paper else None,
            "citation": _text(citation, 600),
            "summary": _text(summary, 2000),
            "doc": _text(doc, 8000),
            "patterns": {p: (True if any(x.value == p for x in spec.patterns) else
                             next((r for x, r in spec.unsupported.items() if x.value == p), "not supported"))
                         for p in PATTERNS},
            "default_hparams": json.loads(json.dumps(spec.default_hparams(), default=str)),
        }
    return out


def _from_records(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the records alone say about an attention this build has not registered."""
    patterns: dict[str, Any] = {}
    for r in records:
        if r["status"] == "unsupported":
            patterns.setdefault(r["pattern"], _text(r.get("reason"), 500) or "unsupported (no reason recorded)")
        else:
            patterns[r["pattern"]] = True
    return {"registered": False, "module": None, "class": None, "plugin": None, "family": None, "family_text": None,
            "paper": None, "citation": "", "summary": "", "doc": "",
            "patterns": {p: patterns.get(p) for p in PATTERNS}, "default_hparams": {}}


def build_mechanisms(records: list[dict[str, Any]], tables: list[dict[str, Any]], efficiency: dict[str, Any],
                     warn=None, metadata: dict[str, dict[str, Any]] | None = None) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(index, pages): the list every page can read (name, family, paper, patterns, counts), and one
    page's data per mechanism (its docstring, hyperparameters as run, accuracy, efficiency, state size)."""
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_name[r["attention"]].append(r)
    meta = registry_metadata(sorted(by_name), warn) if metadata is None else metadata
    accuracy = _accuracy(tables)
    eff = _efficiency(efficiency)
    index, pages = [], {}
    for name in sorted(by_name):
        recs = by_name[name]
        info = dict(meta.get(name) or _from_records(name, recs))
        train = [r for r in recs if r.get("kind") == "train"]
        counts = {"train": len(train), "efficiency": sum(r.get("kind") == "efficiency" for r in recs),
                  "ok": sum(r["status"] == "ok" for r in train), "dirty": sum(is_dirty(r) for r in recs)}
        page = dict(info, name=name, file=file_id(name), counts=counts, hparams=_hparams_as_run(train),
                    state_sizes=_state_sizes(train), accuracy=accuracy.get(name, []), efficiency=eff.get(name, []))
        pages[name] = page
        index.append({k: page[k] for k in ("name", "file", "registered", "plugin", "family", "family_text", "paper",
                                            "citation", "patterns", "counts")})
    return index, pages


def _hparams_as_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each hyperparameter setting the attention trained with, with how many runs and which tasks."""
    sets: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["status"] == "unsupported":
            continue
        hp = hparams_of(r)
        key = json.dumps(hp, sort_keys=True, default=str)
        entry = sets.setdefault(key, {"hparams": json.loads(key), "runs": 0, "tasks": set(), "scales": set()})
        entry["runs"] += 1
        entry["tasks"].add(r["task"])
        entry["scales"].add(scale_of(r))
    return [dict(e, tasks=sorted(e["tasks"]), scales=sorted(e["scales"])) for _, e in sorted(sets.items())]


def _state_sizes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recurrent state size the runs report (`cost.state_size`, numbers summed over layers), per
    task, sequence length and model width: it grows with the width, and with the length for a KV cache."""
    seen: dict[tuple, dict[str, Any]] = {}
    for r in records:
        cost = r.get("cost") if isinstance(r.get("cost"), dict) else {}
        size = _number(cost.get("state_size"))
        if r["status"] != "ok" or size is None:
            continue
        task_cfg = (r.get("config") or {}).get("task") if isinstance(r.get("config"), dict) else None
        task_cfg = task_cfg if isinstance(task_cfg, dict) else {}
        key = (r["task"], r["pattern"], scale_of(r), _number(task_cfg.get("seq_len")), _number(task_cfg.get("d_model")), size)
        seen.setdefault(key, {"task": key[0], "pattern": key[1], "scale": key[2], "seq_len": key[3], "d_model": key[4],
                              "state_size": size})
    return sorted(seen.values(), key=lambda e: (e["scale"], e["task"], e["pattern"], e["seq_len"] or 0, e["d_model"] or 0))


def _accuracy(tables: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """name -> [{scale, hardware, patterns: {pattern: {task: column}}}]: each mechanism's cells with
    their column's context (gate, baselines, the reference's cell, rank among the mechanisms)."""
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for table in tables:
        cells = {(c["row"], c["task"]): c for c in table["cells"]}
        for task, info in table["tasks"].items():
            metric = info["primary_metric"]
            hib = bool((info["metric_info"].get(metric) or {}).get("higher_is_better", True))
            # the trivial baselines only (the gate's): a strong one such as lstf's linear model is a bar, not chance
            trivial = info.get("trivial_baselines")
            baselines = {ref["label"]: ref["values"][task][metric] for ref in table["references"]
                         if metric in (ref["values"].get(task) or {}) and (trivial is None or ref["label"] in trivial)}
            # rank: each attention by its best setting's mean, best first
            best: dict[str, float] = {}
            for row in table["rows"]:
                c = cells.get((row["id"], task))
                if c and c["status"] == "ok" and metric in c["metrics"]:
                    v = c["metrics"][metric][0]
                    if row["attention"] not in best or (v > best[row["attention"]] if hib else v < best[row["attention"]]):
                        best[row["attention"]] = v
            order = sorted(best, key=lambda a: -best[a] if hib else best[a])
            gate = info.get("gate") or {}
            reference = None
            ref_name = (gate.get("gate") or {}).get("reference") or "softmax"  # the column's reference mechanism
            ref_rows = [row for row in table["rows"] if row["attention"] == ref_name]
            for row in ref_rows:
                c = cells.get((row["id"], task))
                if c and c["status"] == "ok" and metric in c["metrics"]:
                    reference = {"attention": row["attention"], "variant": row["variant"], "value": c["metrics"][metric]}
                    break
            column = {"metric": metric, "hib": hib,
                      "gate": {"status": gate.get("status", "unknown"), "reason": gate.get("reason") or ""},
                      "baselines": baselines, "reference": reference, "of": len(order)}
            for row in table["rows"]:
                c = cells.get((row["id"], task))
                if c is None:
                    continue
                entry = out[row["attention"]].setdefault((table["scale"], table["hardware"]),
                                                         {"scale": table["scale"], "hardware": table["hardware"], "patterns": {}})
                col = entry["patterns"].setdefault(table["pattern"], {}).setdefault(
                    task, dict(column, rank=(order.index(row["attention"]) + 1) if row["attention"] in order else None, rows=[]))
                col["rows"].append({"variant": row["variant"], "status": c["status"], "value": c["metrics"].get(metric),
                                    "note": c["note"], "runs": [x[0] for x in c["runs"]], "dirty": c.get("dirty", 0),
                                    "counts": c["counts"]})
    return {name: [groups[k] for k in sorted(groups)] for name, groups in out.items()}


def _efficiency(efficiency: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """name -> [{group, hardware, scale, settings, patterns: {pattern: [its curves + the baselines']}}]."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, group in enumerate(efficiency.get("groups") or []):
        names = {line["attention"] for lines in group["patterns"].values() for line in lines}
        for name in sorted(names):
            patterns = {}
            for pattern, lines in group["patterns"].items():
                mine = [line for line in lines if line["attention"] == name]
                if not mine:
                    continue
                bases = [line for line in lines if line["attention"] in EFFICIENCY_BASELINES and not line["variant"]
                         and line["attention"] != name]
                patterns[pattern] = mine + bases
            out[name].append({"group": i, "hardware": group["hardware"], "scale": group["scale"],
                              "settings": group["settings"], "patterns": patterns})
    return dict(out)
