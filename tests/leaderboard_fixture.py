"""Synthetic result records for the leaderboard's tests, scale benchmark and screenshots (a test
fixture, not part of the package: benchmarks/leaderboard_scale.py and scripts/screenshots.py put
tests/ on sys.path to import it).

The numbers are made up (seeded noise around per-attention qualities) and say nothing about any
mechanism; they exercise every path of the site: several tasks with metrics in both directions,
reference baselines, every status, several seeds, scales and hardware, and efficiency records with
OOM points. Real records come from `cab run` and `cab bench`.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from cab.results.records import SCHEMA

ATTENTIONS = {  # name -> (quality in [0, 1], time exponent, memory exponent)
    "softmax": (0.95, 2.0, 2.0), "vanilla": (0.95, 2.0, 2.0), "linear": (0.55, 1.0, 1.0), "based": (0.8, 1.0, 1.0),
    "mamba": (0.85, 1.0, 1.0), "lightning": (0.6, 1.0, 1.0), "sliding_window": (0.5, 1.0, 1.0), "halo": (0.62, 1.1, 1.0),
    "lka": (0.45, 1.0, 1.0), "lsda": (0.58, 1.2, 1.1), "local": (0.52, 1.0, 1.0), "performer": (0.5, 1.0, 1.0),
}
SELF_ONLY = {"sliding_window", "halo", "lka", "lsda", "mamba", "local"}
TASKS = {  # name -> (patterns, {metric: (higher_is_better, description, lo, hi)}, primary, references)
    "mqar": (("noncausal_self", "causal_self"),
             {"accuracy": (True, "fraction of queries recalled exactly", 0.0, 1.0), "loss": (False, "cross-entropy at query positions (nats)", 0.05, 5.0)},
             "accuracy", {"accuracy_guess_a_context_value": 0.25}),
    "listops": (("noncausal_self",),
                {"accuracy": (True, "test accuracy", 0.17, 0.45), "loss": (False, "cross-entropy (nats)", 1.2, 2.2)},
                "accuracy", {"accuracy_majority_class": 0.174}),
    "forecasting": (("noncausal_self", "noncausal_cross", "causal_cross"),
                    {"mse": (False, "mean squared error on the normalised series", 0.3, 1.1), "mae": (False, "mean absolute error", 0.35, 0.9)},
                    "mse", {"mse_last_value": 1.25, "mae_last_value": 0.95}),
    "lm": (("causal_self",), {"perplexity": (False, "validation perplexity", 25.0, 90.0)}, "perplexity", {"perplexity_unigram": 210.0}),
    "seq2seq": (("noncausal_cross", "causal_cross", "causal_self"),
                {"bleu": (True, "corpus BLEU", 5.0, 30.0), "chrf": (True, "chrF", 20.0, 55.0)}, "bleu", {}),
}
# The reference gate each task's records state (`gate`, cab/gates.py; it takes precedence over the
# built-in gates of tasks of the same name): softmax clears it on mqar, forecasting and lm, not on
# listops (the demo's "not learnt" column); seq2seq has none (no verdict).
GATES = {
    "mqar": {"reference": "softmax", "metric": "accuracy", "higher_is_better": True,
             "baselines": ["accuracy_guess_a_context_value"], "margin": 0.3, "floor": None},
    "listops": {"reference": "softmax", "metric": "accuracy", "higher_is_better": True,
                "baselines": ["accuracy_majority_class"], "margin": 0.0, "floor": 0.6},
    "forecasting": {"reference": "softmax", "metric": "mse", "higher_is_better": False,
                    "baselines": ["mse_last_value"], "margin": 0.2, "floor": None},
    "lm": {"reference": "softmax", "metric": "perplexity", "higher_is_better": False,
           "baselines": ["perplexity_unigram"], "margin": 100.0, "floor": None},
}
FAILS = {"failed": ("RuntimeError", "shape mismatch in chunked scan"), "oom": ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB"),
         "nan": ("NaNLoss", "loss became nan at step 120"), "timeout": ("JobTimeout", "job exceeded its time limit of 600 s")}
HARDWARE = {"cpu-2c": {"device": "cpu: Intel(R) Xeon(R) Processor", "cpu_count": 2}, "NVIDIA H100 80GB HBM3": {"device": "NVIDIA H100 80GB HBM3", "cpu_count": 16}}


def _run_id(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _env(hardware: str, threads: int = 2) -> dict[str, Any]:
    hw = HARDWARE.get(hardware, {"device": hardware, "cpu_count": 8})
    return {"cab_version": "0.1.0", "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": False,
            "torch": "2.13.0", "python": "3.11.7", "platform": "Linux", "device": hw["device"],
            "cpu_count": hw["cpu_count"], "threads": threads}


def train_record(attention: str, task: str, pattern: str, seed: int = 0, scale: str = "cpu", hardware: str = "cpu-2c",
                 status: str = "ok", rng: random.Random | None = None, metrics: dict[str, float] | None = None,
                 hparams: dict[str, Any] | None = None, task_config: dict[str, Any] | None = None, lr: float = 3e-3,
                 dirty: bool = False, state_size: int | None = -1) -> dict[str, Any]:
    """One `kind: train` record following the runner's shape (cab/run/runner.py). `state_size=-1`: the
    fixture's own (a KV cache for exact attention, a width-sized state for the recurrent ones)."""
    rng = rng or random.Random(int(_run_id(attention, task, pattern, seed, scale), 16))  # stable across processes
    patterns, info, primary, refs = TASKS.get(task, ((pattern,), {"accuracy": (True, "accuracy", 0.0, 1.0)}, "accuracy", {}))
    quality = ATTENTIONS.get(attention, (0.5, 1.0, 1.0))[0]
    task_config = {"name": task, "seq_len": 256, **({"num_kv_pairs": 16, "d_model": 64} if task == "mqar" else {}), **(task_config or {})}
    config = {"attention": {"name": attention, **(hparams or {})}, "task": task_config, "pattern": pattern,
              "trainer": {"name": scale, "steps": 400, "lr": lr}, "seed": seed, "results_dir": "results", "force": False}
    if metrics is None and status == "ok":
        metrics = {}
        for m, (hib, _, lo, hi) in info.items():
            q = min(1.0, max(0.0, quality + rng.gauss(0, 0.03)))
            metrics[m] = lo + (hi - lo) * (q if hib else 1 - q)
    error = None
    if status in FAILS:
        kind, msg = FAILS[status]
        error = {"type": kind, "message": msg, "traceback": f"Traceback (most recent call last):\n  ...\n{kind}: {msg}\n"}
    seq = 256
    return {
        "schema": SCHEMA, "kind": "train", "run_id": _run_id(config), "status": status, "attention": attention,
        "pattern": pattern, "task": task, "seed": seed, "scale": scale, "hardware": hardware,
        "metrics": metrics or {}, "metric_info": {m: {"higher_is_better": v[0], "description": v[1]} for m, v in info.items()},
        "primary_metric": primary, "reference_metrics": dict(refs),
        "gate": None if status == "unsupported" else GATES.get(task),
        "cost": {} if status != "ok" else {
            "params": 120_000, "flops_per_example": int(4e6 * seq ** ATTENTIONS.get(attention, (0, 1.0))[1] / seq * (1 + 0.1 * rng.random())),
            "peak_memory_bytes": int(3e8 * (1 + rng.random())), "wall_s": round(30 * ATTENTIONS.get(attention, (0, 1.0))[1] * (1 + 0.2 * rng.random()), 2),
            "tokens_per_second": round(5e4 / ATTENTIONS.get(attention, (0, 1.0))[1] * (1 + 0.2 * rng.random()), 1),
            "state_size": state_size if state_size != -1 else (2 * 2 * seq * 64 if attention in ("softmax", "vanilla") else None
                                                               if attention in ("sliding_window", "halo", "local") else int(64 * 64 * (1 + 3 * quality))),
        },
        "attention_info": {}, "reason": None if status != "unsupported" else f"{attention} has no form for {pattern.replace('_', ' ')} attention",
        "config": config, "env": dict(_env(hardware), git_dirty=dirty), "command": f"cab run attention={attention} task={task} pattern={pattern} trainer={scale} seed={seed}",
        "started_at": f"2026-11-{1 + seed % 27:02d}T12:00:00+00:00", "duration_s": 31.5, "error": error,
    }


def efficiency_record(attention: str, pattern: str, hardware: str = "cpu-2c", direction: str = "forward",
                      lengths=(256, 512, 1024, 2048, 4096, 8192), memory_limit: float = 2e9,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One `kind: efficiency` record (the shape `cab bench` writes): power-law time and memory, OOM past a limit.
    `direction="decode"`: time per generated token against the context (linear for exact attention,
    flat for a recurrent state). `extra`: fields a distributed benchmark adds (`world_size`, `strategy`)."""
    _, te, me = ATTENTIONS.get(attention, (0.5, 1.0, 1.0))
    if direction == "decode":  # one token against a context of n: the KV cache is read once, a state is constant
        te, me = te - 1, me - 1
    spread = 1 + 0.35 * (int(hashlib.sha256(attention.encode()).hexdigest(), 16) % 7)  # curves apart in the demo
    c_t = 2e-10 if te >= 2 else 3e-7 * spread
    points = []
    for n in lengths:
        mem = 4 * 512 * n * 8 + (8 * 4 * n * n if me >= 2 else 4096 * n * me * spread)
        t = c_t * n ** te + 2e-4
        if mem > memory_limit:
            points.append({"length": n, "status": "oom", "time_median_s": None, "time_iqr_s": None, "peak_memory_bytes": None,
                           "flops": None, "error": "CUDA out of memory"})
        else:
            points.append({"length": n, "status": "ok", "time_median_s": t, "time_iqr_s": t * 0.04, "peak_memory_bytes": int(mem),
                           "flops": int(4 * n * n * 512 if te >= 2 else 8 * n * 512 * 64), "error": None})
    config = {"attention": {"name": attention}, "pattern": pattern, "bench": {"lengths": list(lengths), "direction": direction, **(extra or {})}}
    return {
        "schema": SCHEMA, "kind": "efficiency", "run_id": _run_id("eff", config, hardware), "status": "ok", "attention": attention,
        "pattern": pattern, "task": None, "seed": 0, "scale": "bench", "hardware": hardware, "metrics": {}, "metric_info": {},
        "cost": {}, "config": config, "env": _env(hardware), "command": f"cab bench attention={attention} pattern={pattern}",
        "started_at": "2026-11-20T12:00:00+00:00", "duration_s": 12.0, "error": None, "reason": None,
        "efficiency": {"direction": direction, "batch": 4, "num_heads": 8, "dim": 512, "dtype": "float32", "device": "cpu", "threads": 2, **(extra or {}),
                       "points": points, "derived": {"time_exponent": te if te >= 2 else round(te + 0.03 * (len(attention) % 5), 3),
                                                     "memory_exponent": me}},
    }


def demo_records(seeds: int = 3, scales=("cpu",), hardware=("cpu-2c",), failures: bool = True, seed: int = 0,
                 attentions=None) -> list[dict[str, Any]]:
    """A full grid: attentions × tasks × their patterns × seeds × scales × hardware, with every status."""
    rng = random.Random(seed)
    out = []
    names = list(attentions or ATTENTIONS)
    for scale in scales:
        for hw in hardware:
            for task, (patterns, *_rest) in TASKS.items():
                for pattern in patterns:
                    for att in names:
                        for s in range(seeds):
                            status = "ok"
                            if att in SELF_ONLY and "cross" in pattern:
                                status = "unsupported"
                            elif failures and att == "lsda" and task == "lm":
                                status = "nan"
                            elif failures and att == "performer" and task == "seq2seq" and pattern == "causal_cross":
                                status = "failed"
                            elif failures and att == "vanilla" and task == "lm" and scale != "cpu":
                                status = "oom"
                            elif failures and att == "based" and task == "listops" and s == seeds - 1 and seeds > 1:
                                status = "timeout"
                            out.append(train_record(att, task, pattern, s, scale, hw, status, rng))
    for hw in hardware:
        for pattern in ("noncausal_self", "causal_self"):
            for att in names:
                out.append(efficiency_record(att, pattern, hw))
    return out


def write_records(records: list[dict[str, Any]], directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for r in records:
        (directory / f"{r['run_id']}.json").write_text(json.dumps(r, indent=1))
    return directory


# Zoology's MQAR grid in miniature: cells (length, key-value pairs) × model widths × learning rates ×
# seeds. State sizes follow each mechanism's form (exact attention: a KV cache of 2 layers × 2 × L × d;
# linear-time ones: grow with d²); accuracy rises with the state, the better learning rate by 0.05.
ZOOLOGY_STATE = {"softmax": lambda L, d: 2 * 2 * L * d, "linear": lambda L, d: 2 * (d * d + d), "based": lambda L, d: 2 * 153 * d,
                 "mamba": lambda L, d: 2 * 2 * d * 16, "sliding_window": None}


def zoology_records(attentions=("softmax", "linear", "based", "mamba", "sliding_window"), cells=((64, 4), (256, 16)),
                    widths=(32, 64), lrs=(1e-3, 3e-3), seeds=2, scale: str = "cpu") -> list[dict[str, Any]]:
    out = []
    for L, kv in cells:
        for att in attentions:
            for d in widths:
                size = ZOOLOGY_STATE.get(att, lambda L, d: d * d)
                state = size(L, d) if size else None
                for lr in lrs:
                    for seed in range(seeds):
                        rng = random.Random(int(_run_id(att, L, d, lr, seed), 16))
                        base = 1.0 if att == "softmax" else min(0.98, 0.05 + 0.9 * (state or 4096) / (8 * L * d))
                        acc = max(0.0, min(1.0, base - (0.05 if lr == lrs[0] else 0.0) + rng.gauss(0, 0.01) - 0.02 * (kv / L)))
                        r = train_record(att, "mqar", "causal_self", seed=seed, scale=scale, lr=lr, metrics={"accuracy": acc, "loss": 1.0 - acc},
                                         task_config={"seq_len": L, "num_kv_pairs": kv, "d_model": d}, state_size=state)
                        r["reference_metrics"] = {"accuracy_guess_a_context_value": 1.0 / kv}
                        out.append(r)
    return out

