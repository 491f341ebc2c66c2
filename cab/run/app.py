"""The Hydra application behind `cab run`: compose the config, run one job, print one line.

Launchers (basic, joblib, submitit, Ray) call `job` in whatever process they choose; the job writes
its record itself, so nothing depends on the launcher returning.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from cab.registry import ChoiceError


def _summary(record: dict) -> str:
    metric = record.get("primary_metric")
    value = record.get("metrics", {}).get(metric) if metric else None
    shown = f"{metric}={value:.4f}" if isinstance(value, float) else ""
    extra = record.get("reason") or (record.get("error") or {}).get("message") or ""
    skipped = " (exists; skipped, force=true to rerun)" if record.get("_skipped") else ""
    return (f"[{record['status']}] {record['attention']} · {record['task']} · {record['pattern']} · seed {record['seed']}"
            f" {shown} {extra}{skipped} -> {record['run_id']}").replace("  ", " ")


@hydra.main(version_base="1.3", config_path="pkg://cab.conf", config_name="config")
def job(cfg: DictConfig) -> dict | None:
    from hydra.core.hydra_config import HydraConfig

    from cab.config import register_configs
    from cab.registry import import_modules
    from cab.run.runner import check_cell, run_job

    config = OmegaConf.to_container(cfg, resolve=True)
    import_modules(config.get("imports") or [])
    register_configs()
    try:
        check_cell(config["attention"]["name"], config["task"]["name"], config["pattern"])
    except ChoiceError as exc:
        mode = HydraConfig.get().mode.name
        if mode == "RUN":
            print(f"cab: error: {exc}", file=sys.stderr)
            sys.exit(2)
        print(f"[skipped] {exc}", file=sys.stderr)  # a sweep crossing tasks × patterns: not a cell
        return None
    from cab.run.loggers import mirror

    record = run_job(config)
    mirror(record, config)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode.name == "MULTIRUN":
        from cab.run.sweep import log_job

        log_job(hydra_cfg.sweep.dir, record)
        print(f"job {hydra_cfg.job.num}: {_summary(record)}", flush=True)
    else:
        print(_summary(record), flush=True)
    return record


def run_app() -> None:
    job()
