"""Reference gates: does a leaderboard column measure learning at all?

A column is one task (or task variant) on one pattern, at one scale, on one machine. It is *learnt*
when the task's reference mechanism (`softmax`) beats the task's best *trivial* baseline by the
task's stated margin, and reaches the task's floor where it states one, **on every seed** it was run
with. A column whose reference has not learnt the task compares mechanisms on noise: the leaderboard
(`cab.leaderboard`) marks it, on the site and in `cab leaderboard table`, and leaves it out of the
aggregate; the end-of-sweep summary names no "best" attention there.

A gate is part of a task's metadata. The built-in tasks' gates are the table `GATES` below, and
`cab.task.Task.reference_gate()` serves them to the task classes; a task of your own declares
`gate = Gate(...)` on its class instead (docs/adding-a-task.md). The runner writes the gate a run
was judged by into its record (`gate`, docs/record-schema.md), so records are self-describing, and
the leaderboard judges by the records' own gate; records written before the field existed (the
published v1 records) are judged by `GATES`. This module imports neither torch nor anything else
heavy: the leaderboard builder reads it.

Only *trivial* baselines gate: chance, majority class, unigram, repeat-last. A strong baseline such
as `lstf`'s linear model is a finding to report, not a bar that says whether anything was learnt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

REFERENCE = "softmax"
STATUSES = ("learnt", "not_learnt", "unknown")


@dataclass(frozen=True)
class Gate:
    """The bar a task's reference mechanism must clear, on every seed, for a column to count.

    - `metric`: the metric judged (a name in the task's `metric_info`; need not be the primary one:
      gCOG judges its in-distribution `accuracy/iid` and reports out-of-distribution accuracy);
    - `higher_is_better`: that metric's direction;
    - `baselines`: names in the task's `reference_metrics` that are *trivial* baselines, in the
      metric's units; the best of those recorded for a seed is the bar on that seed;
    - `margin`: how far beyond the best baseline the reference must be, in the metric's units, in
      its better direction (0: strictly better);
    - `floor`: an absolute level the reference must reach as well (≥ when higher is better, ≤
      otherwise), or None;
    - `reference`: the mechanism that must clear it (`softmax`).
    """

    metric: str
    higher_is_better: bool
    baselines: tuple[str, ...] = ()
    margin: float = 0.0
    floor: float | None = None
    reference: str = REFERENCE

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError("a gate needs a metric name")
        if not isinstance(self.higher_is_better, bool):
            raise ValueError("higher_is_better must be true or false")
        baselines = self.baselines
        if isinstance(baselines, str) or not all(isinstance(b, str) and b for b in baselines):
            raise ValueError("baselines must be a list of reference_metrics names")
        object.__setattr__(self, "baselines", tuple(baselines))
        if _finite(self.margin) is None or self.margin < 0:
            raise ValueError("margin must be a finite number >= 0")
        object.__setattr__(self, "margin", float(self.margin))
        if self.floor is not None:
            if _finite(self.floor) is None:
                raise ValueError("floor must be a finite number or null")
            object.__setattr__(self, "floor", float(self.floor))
        if not self.baselines and self.floor is None:
            raise ValueError("a gate needs at least one baseline or a floor")
        if not isinstance(self.reference, str) or not self.reference:
            raise ValueError("reference must be an attention name")

    def as_dict(self) -> dict[str, Any]:
        """The record's `gate` field."""
        return {"reference": self.reference, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "baselines": list(self.baselines), "margin": self.margin, "floor": self.floor}

    @classmethod
    def from_dict(cls, data: Any) -> Gate:
        """A gate from a record's `gate` field (untrusted): ValueError when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        unknown = set(data) - {"reference", "metric", "higher_is_better", "baselines", "margin", "floor"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        baselines = data.get("baselines", [])
        if not isinstance(baselines, list):
            raise ValueError("baselines must be a list")
        return cls(metric=data.get("metric"), higher_is_better=data.get("higher_is_better"), baselines=tuple(baselines),
                   margin=data.get("margin", 0.0), floor=data.get("floor"), reference=data.get("reference", REFERENCE))

    def describe(self) -> str:
        """One line: "softmax accuracy ≥ 0.900 and better than guess a context value, on every seed"."""
        ge = "≥" if self.higher_is_better else "≤"
        parts = []
        if self.floor is not None:
            parts.append(f"{ge} {_fmt(self.floor)}")
        if self.baselines:
            names = (" / ".join(baseline_label(b, self.metric) for b in self.baselines)
                     if len(self.baselines) == 1 else "the best of " + ", ".join(baseline_label(b, self.metric) for b in self.baselines))
            if self.margin:
                parts.append(f"at least {_fmt(self.margin)} {'above' if self.higher_is_better else 'below'} {names}")
            else:
                parts.append(f"better than {names}")
        return f"{self.reference} {self.metric} " + " and ".join(parts) + ", on every seed"

    def threshold(self, baselines: dict[str, float]) -> tuple[float | None, bool, str]:
        """(bar, strict, why) on one seed, from that seed's recorded baselines: the reference passes
        when its value is at the bar or beyond it in the metric's direction, strictly beyond when
        `strict` (a margin of 0 over a baseline means "better than", not "equal to"). The bar is the
        more demanding of the floor and the best baseline plus the margin; None when neither is known."""
        known = {b: v for b in self.baselines if (v := _finite(baselines.get(b))) is not None}
        sign = 1.0 if self.higher_is_better else -1.0
        bar, strict, why = None, False, []
        if self.floor is not None:
            bar = self.floor
            why.append(f"floor {_fmt(self.floor)}")
        if known:
            best = (max if self.higher_is_better else min)(known, key=known.get)
            over = known[best] + sign * self.margin
            margin = f" {'+' if sign > 0 else '−'} {_fmt(self.margin)}" if self.margin else ""
            why.append(f"{baseline_label(best, self.metric)} {_fmt(known[best])}{margin}")
            if bar is None or sign * (over - bar) > 0:
                bar, strict = over, self.margin == 0
            elif over == bar:
                strict = self.margin == 0
        return bar, strict, "; ".join(why)

    def passes(self, value: float, baselines: dict[str, float]) -> bool | None:
        """Whether one seed's value clears the gate (None: no bar is known for that seed)."""
        bar, strict, _ = self.threshold(baselines)
        if bar is None:
            return None
        diff = (value - bar) * (1.0 if self.higher_is_better else -1.0)
        return diff > 0 if strict else diff >= -1e-12


def baseline_label(name: str, metric: str) -> str:
    """"accuracy_guess_a_context_value" -> "guess a context value" (as the leaderboard's reference rows)."""
    for prefix in (metric, metric.split("/", 1)[0]):
        if name.startswith(prefix + "_"):
            name = name[len(prefix) + 1:]
            break
    return name.replace("_", " ")


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    magnitude = abs(value)
    return f"{value:.3g}" if magnitude != 0 and (magnitude < 0.01 or magnitude >= 1000) else f"{value:.3f}"


def judge(gate: Gate | None, runs: Iterable[dict[str, Any]], reference_label: str | None = None) -> dict[str, Any]:
    """The verdict on one column from its reference's runs, one per seed: `{"seed", "status",
    "metrics", "reference_metrics"}` (records, or the sweep log's lines).

    Returns `{"status": "learnt" | "not_learnt" | "unknown", "reason": one line, "gate": the gate's
    dict or None, "seeds": [{seed, status, value, bar, passed}], "mean", "std", "n"}`:
    - learnt: every seed ran (`ok`), reported the metric and cleared its bar;
    - not_learnt: some seed did not (a failed, timed-out or NaN seed counts as not clearing it);
    - unknown: no gate, no reference run, or nothing to judge by (the metric or every baseline missing).
    """
    runs = sorted(runs, key=lambda r: (not isinstance(r.get("seed"), int), r.get("seed") if isinstance(r.get("seed"), int) else 0))
    out: dict[str, Any] = {"status": "unknown", "reason": "", "gate": gate.as_dict() if gate else None,
                           "seeds": [], "mean": None, "std": None, "n": 0}
    if gate is None:
        out["reason"] = "the task declares no reference gate"
        return out
    who = reference_label or gate.reference
    if not runs:
        out["reason"] = f"no {who} records in this column, so nothing says the task is learnable here"
        return out
    statuses = {r.get("status") for r in runs}
    if statuses == {"unsupported"}:
        out["reason"] = f"{who} is unsupported on this pattern"
        return out
    seeds, values, bars, whys = [], [], [], []
    for r in runs:
        status = r.get("status")
        value = _finite((r.get("metrics") or {}).get(gate.metric)) if status == "ok" else None
        refs = r.get("reference_metrics") if isinstance(r.get("reference_metrics"), dict) else {}
        bar, strict, why = gate.threshold(refs)
        passed = None if value is None or bar is None else gate.passes(value, refs)
        seeds.append({"seed": r.get("seed"), "status": status, "value": value, "bar": bar, "strict": strict, "passed": passed})
        if value is not None:
            values.append(value)
        if bar is not None:
            bars.append(bar)
            whys.append(why)
    out["seeds"] = seeds
    if values:
        out["mean"] = sum(values) / len(values)
        out["n"] = len(values)
        if len(values) > 1:
            out["std"] = math.sqrt(sum((v - out["mean"]) ** 2 for v in values) / (len(values) - 1))
    ok_seeds = [s for s in seeds if s["status"] == "ok"]
    if not ok_seeds:
        out["status"] = "not_learnt"
        out["reason"] = f"no {who} seed finished (" + ", ".join(f"seed {s['seed']} {s['status']}" for s in seeds) + ")"
        return out
    if not values:
        out["reason"] = f"{who}'s records do not report {gate.metric}"
        return out
    if not bars:
        out["reason"] = f"{who}'s records hold none of the gate's baselines ({', '.join(gate.baselines)})"
        return out
    # the reader's line: the reference's value, the bar it needed and why, how many seeds cleared it
    value_text = (f"{who} {gate.metric} {_fmt(out['mean'])}" + (f" ± {_fmt(out['std'])}" if out["std"] is not None else "")
                  + f" over {out['n']} seed{'s' if out['n'] != 1 else ''}")
    strict = all(s["strict"] for s in seeds if s["bar"] is not None)
    op = ("> " if strict else "≥ ") if gate.higher_is_better else ("< " if strict else "≤ ")
    lo, hi = _fmt(min(bars)), _fmt(max(bars))
    bar_text = op + (lo if lo == hi else f"{lo}–{hi}" if gate.higher_is_better else f"{hi}–{lo}")
    why = whys[0]
    if len(set(whys)) > 1:  # baselines drawn with each seed's data (gCOG's chance): say their mean
        names = {b for r in runs for b in (r.get("reference_metrics") or {}) if b in gate.baselines}
        mean_refs = {}
        for b in names:
            vals = [v for r in runs if (v := _finite((r.get("reference_metrics") or {}).get(b))) is not None]
            mean_refs[b] = sum(vals) / len(vals)
        why = gate.threshold(mean_refs)[2] + ", mean over seeds"
    failing = [s for s in seeds if s["passed"] is not True]
    if not failing:
        out["status"] = "learnt"
        out["reason"] = f"{value_text}; needs {bar_text} on every seed ({why}): all pass"
        return out
    out["status"] = "not_learnt"

    def fail(s: dict[str, Any]) -> str:
        if s["status"] != "ok":
            return f"seed {s['seed']}: {s['status']}"
        if s["value"] is None:
            return f"seed {s['seed']}: no {gate.metric}"
        if s["bar"] is None:
            return f"seed {s['seed']}: no baseline"
        return f"seed {s['seed']}: {_fmt(s['value'])}"

    passed = len(seeds) - len(failing)
    if passed == 0 and all(s["status"] == "ok" and s["passed"] is False for s in failing):
        verdict = "no seed passes"
    else:
        verdict = f"{passed} of {len(seeds)} pass; fails on " + ", ".join(fail(s) for s in failing)
    out["reason"] = f"{value_text}; needs {bar_text} on every seed ({why}); {verdict}"
    return out


# The built-in tasks' gates (issue #17's targets). Kept here, not in tasks/*.py, because those import
# torch and the leaderboard builder must not; `cab.task.Task.reference_gate()` is how a task class
# reaches its own. Each is tested in tests/test_gates.py.
GATES: dict[str, Gate] = {
    # Zoology's MQAR: attention solves it (≥ 0.9), so a column where it does not measures nothing
    "mqar": Gate("accuracy", True, ("accuracy_guess_a_context_value",), floor=0.90),
    "mqar_cross": Gate("accuracy", True, ("accuracy_guess_a_context_value",), floor=0.90),
    # gCOG: in-distribution accuracy first; the column then reports out-of-distribution accuracy
    "gcog": Gate("accuracy/iid", True, ("accuracy_chance", "accuracy_majority_class"), floor=0.80),
    # ListOps: twice the majority class (about 0.165 at every scale's generator settings)
    "listops": Gate("accuracy", True, ("accuracy_majority_class", "accuracy_uniform_guess"), floor=0.33),
    # character models: a clear gain in bits per character over the unigram
    "lm": Gate("bpc", False, ("bpc_unigram",), margin=1.0),
    "mlm": Gate("bpc", False, ("bpc_unigram",), margin=1.0),
    "seq2seq": Gate("bpc", False, ("bpc_unigram",), margin=0.5),
    # forecasting: beat repeating the last value; the linear model is a strong baseline, not a trivial one
    "lstf": Gate("mse", False, ("mse_repeat_last",)),
}
