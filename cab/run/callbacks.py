"""Hydra callbacks: the end-of-sweep summary (status counts, best attention per cell)."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


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
            table = Table(title="best attention per cell (mean primary metric over seeds)")
            for col in ("task", "pattern", "attention", "metric", "mean", "seeds"):
                table.add_column(col)
            for (task, pattern), b in sorted(best.items()):
                table.add_row(task, pattern, b["attention"], b["metric"], f"{b['mean']:.4f}", str(b["seeds"]))
            console.print(table)
        out = config.get("leaderboard_out")
        if out and results_dir:  # grids such as `quickstart` end in a built site
            from cab.leaderboard.site import build

            build(results_dir, out)
            console.print(f"leaderboard built: {out}/index.html  (browse: cab leaderboard serve --dir {out})")
