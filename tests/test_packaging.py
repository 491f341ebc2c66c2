"""A non-editable install ships everything inside the `cab` namespace and runs from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    [path] = out.glob("cab-*.whl")
    return path


def test_wheel_has_no_generic_top_level_names(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"cab"} | {t for t in top if t.endswith(".dist-info")}, sorted(top)
    assert "cab/conf/config.yaml" in names and "cab/conf/trainer/smoke.yaml" in names
    assert "cab/attentions/softmax.py" in names and "cab/tasks/mqar.py" in names


def test_installed_copy_runs_from_another_directory(wheel, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import cab, sys; assert cab.__file__.startswith(sys.argv[1]), cab.__file__\n"
        "from cab.cli import main; assert main(['list']) == 0\n"
        "from hydra import compose, initialize_config_module\n"
        "from cab.config import register_configs; register_configs()\n"
        "with initialize_config_module(config_module='cab.conf', version_base='1.3'):\n"
        "    cfg = compose(config_name='config', overrides=['trainer=smoke', 'attention=linear'])\n"
        "assert cfg.task.seq_len == 64 and cfg.attention.name == 'linear'\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
