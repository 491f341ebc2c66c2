"""Hydra callbacks: the end-of-sweep summary (status counts, best attention per cell where softmax has
learnt the task, cab/gates.py)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


RANKED_UP_TO = 6  # a cell with at most this many attentions is listed whole, with each gap to the reference


def ranking_lines(best: dict) -> list[str]:
    """For small sweeps (the quickstart): every attention of a learnt cell, best first, and how far
    each is from the reference, e.g. `mqar · causal_self: softmax 0.993 | linear 0.412 (-0.581)`."""
    lines = []
    for (task, pattern), b in sorted(best.items()):
        verdict = b.get("gate") or {}
        ranking = b.get("ranking") or []
        if verdict.get("status") != "learnt" or not 1 < len(ranking) <= RANKED_UP_TO:
            continue
        name = (verdict.get("gate") or {}).get("reference", "softmax")
        reference = next((r["mean"] for r in ranking if r["attention"] == name), None)
        parts = []
        for r in ranking:
            gap = "" if reference is None or r["attention"] == name else f" ({r['mean'] - reference:+.3f})"
            parts.append(f"{r['attention']} {r['mean']:.3f}{gap}")
        lines.append(f"{task} · {pattern} ({b['metric']}, gap to {name}): " + " | ".join(parts))
    return lines


class SweepSummary(Callback):
    """After a multirun: reconcile crashed jobs into records, then print a rich summary table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.console import Console
        from rich.table import Table

        from cab.results.markers import reconcile_crashed
        from cab.run.sweep import summarise

        console = Console(stderr=True)
        results_dir = config.get("results_dir")
        crashed = reconcile_crashed(results_dir) if results_dir else []
        counts, best = summarise(config.hydra.sweep.dir)
        if crashed:
            counts["failed"] += len(crashed)
        total = sum(counts.values())
        console.print(f"[bold]sweep finished[/]: {total} jobs · " + " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                      + f" · records in {results_dir}")
        if best:
            table = Table(title="best attention per cell (mean primary metric over seeds; none where softmax has not learnt the task)")
            for col in ("task", "pattern", "attention", "metric", "mean", "seeds", "reference gate"):
                table.add_column(col)
            notes = []
            for (task, pattern), b in sorted(best.items()):
                gate = b.get("gate") or {}
                status = gate.get("status", "unknown")
                if b["attention"] is None:  # softmax missed the task's gate: no winner in noise
                    table.add_row(task, pattern, "—", b["metric"], "", "", "not learnt")
                else:
                    table.add_row(task, pattern, b["attention"], b["metric"], f"{b['mean']:.4f}", str(b["seeds"]),
                                  "learnt" if status == "learnt" else "no verdict")
                if status != "learnt":
                    notes.append(f"{task} · {pattern}: {'not learnt' if status == 'not_learnt' else 'no verdict'}: {gate.get('reason', '')}")
            console.print(table)
            for note in notes:
                console.print(note, markup=False, highlight=False)
            for line in ranking_lines(best):
                console.print(line, markup=False, highlight=False)
        out = config.get("leaderboard_out")
        if out and results_dir:  # grids such as `quickstart` end in a built site
            from cab.leaderboard.site import build

            build(results_dir, out)
            console.print(f"leaderboard built: {out}/index.html  (browse: cab leaderboard serve --dir {out})")
