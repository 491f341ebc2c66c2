"""Shared fixtures: composed configs (Hydra's compose API, as lightning-hydra-template does), the
data directory, and a tiny results directory per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if "CAB_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["CAB_DATA_DIR"] = str(SHARED_DATA)


def compose(overrides: list[str], config_name: str = "config") -> dict:
    """The resolved config of `cab run <overrides>` as a plain dict (no Hydra runtime)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from cab.config import register_configs

    register_configs()
    with initialize_config_module(config_module="cab.conf", version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def smoke_config(tmp_path):
    """Factory: the smoke-scale config of a cell, writing into a temporary results directory."""

    def make(*overrides: str) -> dict:
        return compose(["trainer=smoke", f"results_dir={tmp_path / 'results'}", *overrides])

    return make
