"""The Zoology view: MQAR accuracy against recurrent state size (Zoology, Arora et al., ICLR 2024,
figure 2; Based, ICML 2024, figure 2 right), from the MQAR training records.

One facet per (sequence length, key-value pairs), as Zoology lays out its cells; in each, one line
per mechanism (and hyperparameter setting) through its model widths, x = the state size its runs
report (`cost.state_size`: the recurrent state, or the KV cache of exact attention, summed over the
layers), y = test accuracy, mean ± sample standard deviation over seeds. Where several
configurations of one mechanism, cell and width were run (the grid's learning rates), the one with
the best mean accuracy is shown, as Zoology picks the best learning rate per cell; the point says how
many it was chosen from and by what they differ. The chance line is the records' own baseline
(`accuracy_guess_a_context_value`). Mechanisms whose runs report no state size are listed, not drawn.

Pure data; written by `cab.leaderboard.site` as data/zoology.js.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from cab.leaderboard.data import _config_key, _number, _variant_labels, hardware_of, hparams_of, is_dirty, mean_std, scale_of
from cab.results.records import semantic_config

TASK = "mqar"
METRIC = "accuracy"
CHANCE = "accuracy_guess_a_context_value"


def _task_config(record: dict[str, Any]) -> dict[str, Any]:
    config = record.get("config")
    task = config.get("task") if isinstance(config, dict) else None
    return task if isinstance(task, dict) else {}


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"trainer.lr": "0.003", ...}: a nested config as dotted keys with JSON values."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v, sort_keys=True, default=str)
    return out


def _differing(configs: list[dict[str, Any]]) -> list[str]:
    """The dotted config keys whose values differ between the alternatives of one point."""
    flats = [_flat(semantic_config(c if isinstance(c, dict) else {}, drop=("seed", "debug"))) for c in configs]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({f.get(k) for f in flats}) > 1]


def build_zoology(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{scale, hardware, pattern, facets: [{seq_len, num_kv_pairs, chance, lines, no_state}]}]."""
    mqar = [r for r in records if r.get("kind") == "train" and r.get("task") == TASK and r["status"] != "unsupported"]
    groups: dict[tuple, dict[tuple, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in mqar:
        cfg = _task_config(r)
        seq_len, kv = _number(cfg.get("seq_len")), _number(cfg.get("num_kv_pairs"))
        if seq_len is None or kv is None:
            continue
        groups[(scale_of(r), hardware_of(r), r["pattern"])][(int(seq_len), int(kv))].append(r)
    out = []
    for (scale, hardware, pattern), facets in sorted(groups.items()):
        out.append({"scale": scale, "hardware": hardware, "pattern": pattern, "metric": METRIC,
                    "facets": [_facet(seq_len, kv, recs) for (seq_len, kv), recs in sorted(facets.items())]})
    return out


def _facet(seq_len: int, kv: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    # line = attention + its hyperparameters; point = model width; alternatives = configurations
    lines: dict[tuple[str, str], dict[Any, dict[str, list[dict[str, Any]]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    chance: dict[Any, float] = {}
    for r in records:
        hp = json.dumps(hparams_of(r), sort_keys=True, default=str)
        width = _number(_task_config(r).get("d_model"))
        lines[(r["attention"], hp)][width][_config_key(r)].append(r)
        v = _number((r.get("reference_metrics") or {}).get(CHANCE)) if isinstance(r.get("reference_metrics"), dict) else None
        if v is not None:
            chance.setdefault(r.get("seed"), v)
    hp_by_att: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for att, hp in lines:
        hp_by_att[att][hp] = json.loads(hp)
    labels = {att: _variant_labels(sets) for att, sets in hp_by_att.items()}
    drawn, no_state = [], set()
    for (att, hp), widths in sorted(lines.items()):
        points = []
        for width, configs in widths.items():
            point = _point(width, configs)
            if point is None:
                continue
            if point["state_size"] is None:
                no_state.add(att)
                continue
            points.append(point)
        if points:
            drawn.append({"attention": att, "variant": labels[att][hp], "points": sorted(points, key=lambda p: p["state_size"])})
    return {"seq_len": seq_len, "num_kv_pairs": kv, "chance": sum(chance.values()) / len(chance) if chance else None,
            "lines": drawn, "no_state": sorted(no_state - {line["attention"] for line in drawn})}


def _point(width, configs: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The best configuration's point (mean accuracy over its ok seeds), or None if none finished."""
    scored = []
    for runs in configs.values():
        values = [v for r in runs if r["status"] == "ok" and (v := _number((r.get("metrics") or {}).get(METRIC))) is not None]
        if values:
            scored.append((mean_std(values), values, runs))
    if not scored:
        return None
    (mean, std), values, runs = max(scored, key=lambda s: s[0][0])
    sizes = [v for r in runs if r["status"] == "ok" and isinstance(r.get("cost"), dict) and (v := _number(r["cost"].get("state_size"))) is not None]
    differs = _differing([runs[0].get("config") for _, _, runs in scored]) if len(scored) > 1 else []
    return {"d_model": width, "state_size": sum(sizes) / len(sizes) if sizes else None, "mean": mean, "std": std,
            "n": len(values), "failed": sum(r["status"] != "ok" for r in runs), "runs": sorted(r["run_id"] for r in runs),
            "dirty": sum(is_dirty(r) for r in runs),
            "chosen_from": len(scored), "differing": differs[:6]}
