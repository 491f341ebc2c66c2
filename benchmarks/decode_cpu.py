"""The decode grid on this CPU: time per generated token and the decode state against context length.

    python benchmarks/decode_cpu.py                 # measure what is missing, then write the report
    python benchmarks/decode_cpu.py --report-only   # the report from the records already there

For each attention of ATTENTIONS, `cab bench directions=[decode]` (cab/bench/decode.py) at the context
lengths LENGTHS, for one attention layer (width 512, 8 heads: the efficiency grid's layer) and for the lm
task's model at its cpu scale (width 64, 4 heads, 2 layers, every layer the mechanism), each at batch 1 and
batch 4: 4 jobs per attention, one `kind: efficiency` record each with `direction: decode`, written to
leaderboard/results/cpu/efficiency/ beside the forward records. Jobs take the machine-wide bench lock, one
thread each; records already there are skipped (delete one, or pass --force, to measure it again).

The report (benchmarks/results/decode_cpu.md): per model and batch, each attention's time per token at
every length, its time exponent (the fit `cab bench` uses: last 3 lengths), the state's memory at the
longest length and its exponent, and the context length from which it generates faster than softmax's KV
cache (`cab.bench.scaling.crossing_length` on the measured curves: interpolated on log-log axes).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ATTENTIONS = ("softmax", "sliding_window", "linear", "performer", "lightning", "based", "mamba", "s4d")
LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
MODELS = ("layer", "lm")
BATCHES = (1, 4)
BASELINE = "softmax"
TOKENS = 64  # timed tokens per context length (the default is 32): more samples for the medians on a shared machine


def overrides(attention: str, model: str, batch: int, results: str, lengths=LENGTHS) -> list[str]:
    return [f"attention={attention}", "pattern=causal_self", "directions=[decode]", f"decode.tokens={TOKENS}",
            f"lengths=[{','.join(map(str, lengths))}]", f"batch={batch}", f"decode.model={model}",
            "point_timeout_s=900", f"results_dir={results}"]


def measure(results: str, force: bool, attentions, lengths=LENGTHS) -> None:
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import compose  # the resolved `cab bench` config, as the tests compose it

    from cab.bench.job import run_bench, summary

    for model in MODELS:
        for batch in BATCHES:
            for attention in attentions:
                args = overrides(attention, model, batch, results, lengths) + (["force=true"] if force else [])
                config = compose(args, config_name="bench")
                started = time.time()
                for record in run_bench(config, command="cab bench " + " ".join(args)):
                    print(summary(record), f"({time.time() - started:.0f} s)", flush=True)


def load(results: Path) -> dict[tuple[str, int, str], dict]:
    """(model, batch, attention) -> the newest decode record."""
    out: dict[tuple[str, int, str], dict] = {}
    for path in sorted(results.glob("*.json")):
        record = json.loads(path.read_text())
        eff = record.get("efficiency") or {}
        if record.get("kind") != "efficiency" or eff.get("direction") != "decode":
            continue
        key = (eff.get("model"), eff.get("batch"), record["attention"])
        if key not in out or record["started_at"] > out[key]["started_at"]:
            out[key] = record
    return out


def _exp(k):
    return "–" if k is None else f"{k:.2f}"


def _us(seconds):
    return "–" if seconds is None else f"{seconds * 1e6:,.0f}"


def _mib(n):
    return "–" if n is None else (f"{n / 2**20:,.1f}" if n >= 2**20 / 10 else f"{n / 2**10:,.1f} KiB")


def _summary(group: dict[str, dict], lengths: list[int]) -> str:
    """One sentence per table: the exponents of the constant states and of softmax, and the crossings."""
    from cab.bench.scaling import crossing_length

    def k(r):
        return r["efficiency"]["derived"].get("cpu_time_exponent")

    base = group.get(BASELINE)
    others = {a: r for a, r in group.items() if a != BASELINE and k(r) is not None}
    if base is None or not others or k(base) is None:
        return ""
    crossings, below = [], []
    for a, r in others.items():
        at, note = crossing_length(r["efficiency"]["points"], base["efficiency"]["points"], "cpu_time_median_s")
        if note == "crossed" and at:
            crossings.append(at)
        elif note == "below":
            below.append(a)
    lo, hi = min(map(k, others.values())), max(map(k, others.values()))
    text = (f"Constant-state time exponents (CPU) from {lo:.2f} to {hi:.2f}; softmax's KV cache {k(base):.2f}. ")
    if crossings:
        text += f"Crossings from {min(crossings):,.0f} to {max(crossings):,.0f} tokens"
        text += f"; {', '.join(sorted(below))} faster from the shortest context ({lengths[0]})." if below else "."
    elif below:
        text += f"Every mechanism is faster than softmax from the shortest context ({lengths[0]})."
    return text


def report(results: Path) -> str:
    from cab.bench.scaling import crossing_length

    records = load(results)
    if not records:
        return "no decode records\n"
    some = next(iter(records.values()))
    lines = [
        "# Decode on this CPU: time per generated token and state memory against context length",
        "",
        "Recorded by `python benchmarks/decode_cpu.py` (cab bench directions=[decode], cab/bench/decode.py);",
        f"the records are in leaderboard/results/cpu/efficiency/ (`direction: decode`). {some['hardware']}, torch "
        f"{some['env'].get('torch')}, one thread per job, float32, {some['efficiency']['tokens']} timed tokens after "
        f"{some['efficiency']['warmup_tokens']} warm-up tokens at each context length.",
        "",
        "**The machine was shared while this ran**: other engineers' jobs (training grids, a browser, other",
        "benchmarks) used the same 2 cores, load average 2.5–5 during the run, so single points are noisy (a",
        "constant-state curve wanders by up to 2× between neighbouring lengths, and its fitted exponent by ±0.5);",
        "jobs took the bench lock, so no two benchmarks timed at once, but other work did run beside them.",
        "",
        "Time per token is the median over the timed tokens, in µs of the process's CPU time (`cpu_time_median_s`,",
        "which waiting for a core would not inflate); the records also hold the wall-clock median",
        "(`time_median_s`), whose exponent is given beside. The two agree: the noise between neighbouring lengths",
        "is the shared cores running slower (a sibling thread, caches, memory bandwidth), not waiting for them.",
        "The exponent k fits time ∝ n^k over the",
        "last 3 context lengths (8K–32K), the same fit as the forward records'. State: the bytes the layer (or",
        "the model's layers) carry from token to token at the longest context, whole batch: the KV cache, the",
        "window, or the recurrent state (`state_size(n)` numbers per example × batch × 4 bytes). Crossing: the",
        "context length from which the mechanism generates a token faster than softmax with its KV cache",
        "(interpolated between the two measured lengths around it; `<256`: faster at every length measured;",
        "`>32K`: not faster at the longest).",
        "",
    ]
    for model in MODELS:
        for batch in BATCHES:
            group = {a: r for (m, b, a), r in records.items() if m == model and b == batch}
            if not group:
                continue
            eff0 = next(iter(group.values()))["efficiency"]
            what = (f"one layer, width {eff0['dim']}, {eff0['num_heads']} heads" if model == "layer" else
                    f"the lm model (width {eff0['dim']}, {eff0['num_heads']} heads, {eff0['lm']['num_layers']} layers)")
            lines += [f"## {what}, batch {batch}", ""]
            lengths = sorted({p["length"] for r in group.values() for p in r["efficiency"]["points"]})
            head = ["attention"] + [f"{n // 1024}K" if n >= 1024 else str(n) for n in lengths] + \
                   ["time exp. (CPU)", "time exp. (wall)", f"state at {lengths[-1] // 1024}K (MiB)", "state exp.",
                    "crossing vs softmax (CPU)", "crossing (wall)"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            base = group.get(BASELINE)
            for attention in [a for a in ATTENTIONS if a in group] + sorted(set(group) - set(ATTENTIONS)):
                r = group[attention]
                points = {p["length"]: p for p in r["efficiency"]["points"]}
                d = r["efficiency"]["derived"]
                longest = max((p for p in points.values() if p["status"] == "ok"), key=lambda p: p["length"], default=None)
                cross = []
                for key in ("cpu_time_median_s", "time_median_s"):
                    if attention == BASELINE or base is None:
                        cross.append("–")
                        continue
                    at, note = crossing_length(r["efficiency"]["points"], base["efficiency"]["points"], key)
                    cross.append({"crossed": f"{at:,.0f}" if at else "–", "below": f"<{lengths[0]}",
                                  "above": f">{lengths[-1] // 1024}K", "insufficient": "–"}[note])
                row = [attention] + [_us(points[n].get("cpu_time_median_s")) if n in points and points[n]["status"] == "ok"
                                     else (points[n]["status"] if n in points else "") for n in lengths]
                row += [_exp(d.get("cpu_time_exponent")), _exp(d.get("time_exponent")),
                        _mib(longest["peak_memory_bytes"] if longest else None), _exp(d.get("memory_exponent")), *cross]
                lines.append("| " + " | ".join(row) + " |")
            lines += ["", _summary(group, lengths), ""]
    lines += [
        "Reading it: the constant-state mechanisms (linear, performer, lightning, based, mamba, s4d, and",
        "sliding_window's fixed window) keep the same state at every context, so their time per token is flat",
        "(exponents near 0) and their state memory exponent is 0; softmax's KV cache grows as n, and each token",
        "reads all of it, so its time per token rises with the context (exponent towards 1 once reading the cache",
        "outweighs the layer's fixed per-token work: the projections, and for the model the MLPs and the head).",
        "",
        f"Written {time.strftime('%Y-%m-%d')} on {platform.machine()} by benchmarks/decode_cpu.py.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="leaderboard/results/cpu/efficiency", help="relative to the repository")
    parser.add_argument("--out", default="benchmarks/results/decode_cpu.md")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--attentions", default=",".join(ATTENTIONS))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--force", action="store_true", help="measure again records that exist")
    args = parser.parse_args(argv)
    import os

    os.chdir(REPO)  # the records name results_dir relative to the repository, as the published ones do
    if not args.report_only:
        measure(args.results, args.force, args.attentions.split(","), tuple(int(n) for n in args.lengths.split(",")))
    text = report(Path(args.results))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
