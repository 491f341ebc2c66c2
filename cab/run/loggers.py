"""Optional mirrors of a finished record. The JSON record is the source of truth; wandb only copies it.

`logger=wandb` mirrors each job to its own wandb run (offline unless `logger.mode=online`), finished
in `finally`, with `reinit="finish_previous"` so a sequential multirun never logs into the previous
job's run. wandb is imported only here, only when asked for.
"""

from __future__ import annotations

from typing import Any


def mirror(record: dict[str, Any], config: dict[str, Any]) -> None:
    logger = config.get("logger") or {}
    if logger.get("name") != "wandb" or logger.get("mode") == "disabled":
        return
    import wandb

    run = wandb.init(
        project=logger.get("project", "cab"),
        entity=logger.get("entity"),
        mode=logger.get("mode", "offline"),
        name=f"{record['attention']}-{record['task']}-{record['pattern']}-s{record['seed']}",
        id=record["run_id"],
        config=record["config"],
        tags=[record["status"], record["attention"], record["task"], record["pattern"]],
        reinit="finish_previous",
        dir=logger.get("dir") or config.get("results_dir"),
    )
    try:
        summary = {f"metrics/{k}": v for k, v in record["metrics"].items()}
        summary.update({f"cost/{k}": v for k, v in record["cost"].items() if isinstance(v, (int, float))})
        summary["status"] = record["status"]
        run.log(summary)
        run.summary.update(summary)
    finally:
        run.finish()
