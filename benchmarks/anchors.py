"""Does the board reproduce the anchors' findings? Three checks, computed from training records.

    python benchmarks/anchors.py --results leaderboard/results/cpu/train \
        --normalisation leaderboard/normalisation-v2.json --out benchmarks/results/anchors_cpu.md

1. Zoology (Arora et al., 2023, figure 2): on MQAR attention solves the task, and a mechanism with a
   fixed-size recurrent state falls short of it, the more so the smaller its state. Per self pattern:
   each mechanism's MQAR accuracy, its recurrent state (`cost.state_size`, numbers summed over the
   layers) and its gap to softmax; the Spearman correlation between state size and accuracy over the
   mechanisms whose state is smaller than softmax's KV cache.
2. CAB (Zhang et al., ICML 2023, its README's leaderboard of 2022-11-16): the order of the mechanisms
   both boards rank, per pattern, by CAB's compositional index against this board's aggregate (the
   same z-score mean, over the columns that are learnt here), as Kendall's τ; and CAB's headline,
   "efficient attentions can beat vanilla on noncausal self but every one loses to vanilla on the
   cross patterns", as a count per pattern.
3. gCOG (Ito et al.): a cross-attention model generalises to more distractors than a single-stream one.
   softmax's in-distribution and out-of-distribution accuracy on noncausal self against noncausal
   cross, with the column's gate.

A check whose columns are not learnt (cab.gates: the reference has not beaten the task's trivial
baseline on every seed) says so and draws no conclusion from them. The aggregate needs normalisation
constants: by default they are computed from the records given (as `cab leaderboard build
--freeze-normalisation` would freeze them from the complete grid); --normalisation reads a frozen file.
Nothing here is typed in by hand except CAB's published indices (CAB_INDEX, with their source).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cab.leaderboard import data  # noqa: E402
from cab.leaderboard.markdown import markdown_table  # noqa: E402

# CAB's compositional index per pattern (higher is better), from its README's "Leaderboard-2022.11.16"
# with the FlashAttention rows of 2023-07 (../shared/reference/cab_lra.md §1.6), under this board's
# names. S4D has no noncausal-self index (no summarisation result); vanilla none on causal self (out of
# memory on LM at 8K).
CAB_INDEX = {
    "noncausal_self": {"local": 0.978, "cosformer": 0.466, "longshort": 0.269, "vanilla": -0.024, "lara": -0.032,
                       "performer": -0.285, "nystromformer": -0.440, "probsparse": -0.661, "abc": -0.686,
                       "flash": -1.389},
    "causal_self": {"s4d": 0.985, "longshort": 0.617, "flash": 0.426, "local": -0.239, "abc": -0.623},
    "noncausal_cross": {"vanilla": 0.596, "abc": 0.204, "performer": 0.014, "cosformer": -0.815},
    "causal_cross": {"vanilla": 0.956, "abc": 0.058, "performer": -1.014},
}
EXACT = ("softmax", "vanilla", "flash")  # exact attention: CAB's "vanilla" and its FlashAttention rows
REFERENCE = "softmax"


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's ρ (ties get their mean rank); None under 3 pairs or a constant side."""
    if len(xs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def kendall_tau(xs: list[float], ys: list[float]) -> float | None:
    """Kendall's τ-a over the pairs (concordant − discordant) / all; None under 3 pairs."""
    n = len(xs)
    if n < 3:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (xs[i] - xs[j]) * (ys[i] - ys[j])
            score += (s > 0) - (s < 0)
    return score / (n * (n - 1) / 2)


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def primary_cells(table: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """attention -> its cell in `task` (the first variant row of each attention)."""
    rows = {r["id"]: r for r in table["rows"]}
    out: dict[str, dict[str, Any]] = {}
    for cell in table["cells"]:
        if cell["task"] == task:
            out.setdefault(rows[cell["row"]]["attention"], cell)
    return out


def gate_text(table: dict[str, Any], task: str) -> tuple[bool, str]:
    gate = (table["tasks"].get(task) or {}).get("gate") or {}
    learnt = gate.get("status") == "learnt"
    reason = gate.get("reason") or gate.get("description") or ""
    return learnt, ("learnt" if learnt else f"**not learnt** ({reason})" if reason else "**not learnt**")


def zoology(tables: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## 1. Zoology: attention solves MQAR; fixed-state mechanisms fall short, by state size", ""]
    for pattern in ("causal_self", "noncausal_self"):
        table = tables.get(pattern)
        if not table or "mqar" not in table["tasks"]:
            out += [f"### {pattern}", "", "No MQAR records on this pattern.", ""]
            continue
        learnt, verdict = gate_text(table, "mqar")
        cells = primary_cells(table, "mqar")
        ref = cells.get(REFERENCE)
        ref_acc = ref["metrics"]["accuracy"][0] if ref and ref["status"] == "ok" else None
        ref_state = (ref or {}).get("cost", {}).get("state_size")
        rows, small = [], []
        for name, cell in sorted(cells.items(), key=lambda kv: -(kv[1]["metrics"].get("accuracy", [-1])[0])
                                 if kv[1]["status"] == "ok" else 1):
            if cell["status"] == "unsupported":
                continue
            state = cell.get("cost", {}).get("state_size")
            if cell["status"] != "ok":
                rows.append([name, fmt(state, 0) if state else "–", cell["status"], "", ""])
                continue
            mean, std, n = cell["metrics"]["accuracy"]
            gap = None if ref_acc is None else mean - ref_acc
            rows.append([name, f"{state:,.0f}" if state else "–", f"{mean:.3f} ± {fmt(std)} ({n})", fmt(gap),
                         "" if state is None or ref_state is None else f"{state / ref_state:.2f}"])
            if name != REFERENCE and state and ref_state and state < ref_state and name not in EXACT:
                small.append((state, mean, name))
        out += [f"### {pattern}: column {verdict}", ""]
        out += markdown_table(["attention", "state (numbers)", "accuracy ± std (seeds)", "gap to softmax",
                               "state / softmax's"], rows)
        out.append("")
        if not learnt:
            out += ["The reference has not learnt this column: no conclusion is drawn from it.", ""]
            continue
        rho = spearman([math.log(s) for s, _, _ in small], [a for _, a, _ in small])
        within = [name for _, a, name in small if ref_acc is not None and a >= ref_acc - 0.05]
        below = [name for _, a, name in small if ref_acc is not None and a < ref_acc - 0.05]
        out += [f"- softmax: {fmt(ref_acc)} with a state of {ref_state:,.0f} numbers (its KV cache)."
                if ref_state else f"- softmax: {fmt(ref_acc)}.",
                f"- {len(small)} mechanisms keep a smaller state. Within 0.05 of softmax: "
                f"{', '.join(sorted(within)) or 'none'}; more than 0.05 below: {len(below)}.",
                f"- Spearman ρ(state size, accuracy) over those {len(small)}: {fmt(rho, 2)}"
                + ("" if rho is None else " (Zoology: positive)") + ".", ""]
    return out


def cab_order(tables: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## 2. CAB: the order of the mechanisms per pattern", "",
           "CAB's compositional index (its README, 2022-11-16) against this board's aggregate over the columns "
           "learnt here. `vanilla` is CAB's exact attention; this board has both `vanilla` (the textbook "
           "form) and `softmax` (torch's SDPA).", ""]
    for pattern, cab in CAB_INDEX.items():
        table = tables.get(pattern)
        if not table:
            out += [f"### {pattern}", "", "No records on this pattern.", ""]
            continue
        agg = table["aggregate"]
        learnt = [t for t in table["tasks"] if (table["tasks"][t].get("gate") or {}).get("status") == "learnt"]
        names = {r["id"]: r["attention"] for r in table["rows"]}
        ours: dict[str, float] = {}
        for row_id, row in agg.get("rows", {}).items():
            if row["score"] is not None:
                ours.setdefault(names[row_id], row["score"])
        out += [f"### {pattern}: learnt columns here: {', '.join(sorted(learnt)) or 'none'}", ""]
        if not agg.get("tasks"):
            out += ["No learnt column on this pattern: CAB's order cannot be tested here.", ""]
            continue
        shared = [n for n in cab if n in ours]
        if not shared:
            out += ["No mechanism of CAB's index for this pattern has an aggregate here.", ""]
            continue
        rows = [[n, f"{cab[n]:+.3f}", f"{ours[n]:+.2f}"] for n in sorted(shared, key=lambda n: -cab[n])]
        out += markdown_table(["attention", "CAB index", "aggregate here"], rows)
        tau = kendall_tau([cab[n] for n in shared], [ours[n] for n in shared])
        out += ["", f"- Kendall τ over the {len(shared)} shared mechanisms: {fmt(tau, 2)} "
                f"(1: the same order; 0: unrelated; columns used here: {', '.join(agg['tasks'])})."]
        if "vanilla" in ours:
            efficient = [n for n in ours if n not in EXACT]
            above = sorted(n for n in efficient if ours[n] > ours["vanilla"])
            cab_eff = [n for n in cab if n not in EXACT and "vanilla" in cab]
            cab_above = sorted(n for n in cab_eff if cab[n] > cab["vanilla"])
            out.append(f"- Efficient mechanisms above vanilla here: {len(above)} of {len(efficient)}"
                       + (f" ({', '.join(above)})" if len(above) <= 12 else "")
                       + (f"; in CAB: {len(cab_above)} of {len(cab_eff)}" if cab_eff else "") + ".")
        out.append("")
    return out


def gcog(tables: dict[str, dict[str, Any]]) -> list[str]:
    out = ["## 3. gCOG: cross attention generalises to more distractors than a single stream", ""]
    rows, all_learnt = [], True
    for pattern in ("noncausal_self", "noncausal_cross"):
        table = tables.get(pattern)
        # gCOG's column is named by its split when the records name one ("gcog/distractor")
        column = next((t for t in sorted((table or {}).get("tasks", {})) if t.split("/", 1)[0] == "gcog"), None)
        cell = primary_cells(table, column).get(REFERENCE) if column else None
        if cell is None:
            rows.append([pattern, "", "no records", "", "", ""])
            all_learnt = False
            continue
        learnt, verdict = gate_text(table, column)
        all_learnt &= learnt
        m = cell["metrics"]
        rows.append([pattern, column, verdict, fmt((m.get("accuracy/iid") or [None])[0]),
                     fmt((m.get("accuracy") or [None])[0]), fmt(table["tasks"][column]["references"].get("accuracy_chance"))])
    out += markdown_table(["softmax on", "column", "gate", "in-distribution accuracy", "out-of-distribution accuracy",
                           "chance"], rows)
    out += ["", "Both columns learnt: the comparison stands." if all_learnt else
            "A column is not learnt: the paper's cross-attention advantage cannot be tested at this scale.", ""]
    return out


def report(results: str, normalisation: str | None) -> str:
    records, _ = data.load_records(results, warn=lambda m: None)
    records = [r for r in records if r.get("kind") == "train"]
    tables_all = data.build_tables(records, None)
    norm = (data.freeze_normalisation(tables_all, version=0, source=results) if normalisation is None else
            __import__("json").loads(Path(normalisation).read_text()))
    tables_all = data.build_tables(records, norm)
    sizes = Counter()
    for t in tables_all:
        sizes[(t["scale"], t["hardware"])] += len(t["cells"])
    group = sizes.most_common(1)[0][0] if sizes else None
    tables = {t["pattern"]: t for t in tables_all if (t["scale"], t["hardware"]) == group}
    statuses = Counter(r["status"] for r in records)
    commits = Counter((r.get("env") or {}).get("git_commit", "?")[:7] for r in records)
    dirty = sum(bool((r.get("env") or {}).get("git_dirty")) for r in records)
    scales = sorted({(t["scale"], t["hardware"]) for t in tables_all})
    head = ["# The board against its anchors", "",
            f"`python benchmarks/anchors.py --results {results}`"
            + (f" `--normalisation {normalisation}`" if normalisation else "") + ", from "
            f"{len(records)} training records ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}); "
            f"scale and hardware {', '.join('/'.join(s) for s in scales)}; code at "
            f"{', '.join(f'{c} ({n})' for c, n in commits.most_common())}; {dirty} from a dirty tree.",
            "Normalisation: " + (normalisation or "computed from these records (the constants a frozen file "
                                 "would hold for this grid)") + ".", ""]
    if len(scales) > 1:
        head += [f"Several scale/hardware groups: the checks read the largest, {'/'.join(group)}.", ""]
    return "\n".join(head + zoology(tables) + cab_order(tables) + gcog(tables))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "leaderboard" / "results" / "cpu" / "train"))
    parser.add_argument("--normalisation", default=None, help="a frozen normalisation file (default: from the records)")
    parser.add_argument("--out", default=None, help="write the markdown here (default: print it)")
    args = parser.parse_args()
    text = report(args.results, args.normalisation)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
