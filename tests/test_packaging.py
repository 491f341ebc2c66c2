"""A non-editable install ships everything inside the `cab` namespace and runs from any directory: `cab list`,
`cab data list`, a smoke cell and the leaderboard site from it, with its docs and complete metadata."""

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
    assert "cab/docs/tasks-real.md" in names and "cab/leaderboard_site/page.html" in names
    assert any(n.startswith("cab/leaderboard_site/assets/") for n in names)
    assert "cab/ops/csrc/channel_scan.cpp" in names  # the compiled kernel is built from it on the user's machine


def test_wheel_metadata_is_complete(wheel):
    from email.parser import Parser

    archive = zipfile.ZipFile(wheel)
    [meta_name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
    meta = Parser().parsestr(archive.read(meta_name).decode())
    assert meta["Summary"] and meta["Requires-Python"] == ">=3.10" and meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    classifiers = meta.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers and any(c.startswith("Topic ::") for c in classifiers)
    assert "torch<3,>=2.3" in meta.get_all("Requires-Dist")
    assert meta.get_all("Project-URL") and meta["Description-Content-Type"] == "text/markdown"


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

    def cab(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cab.cli", *args], cwd=elsewhere, env={**env, **extra_env},
                              capture_output=True, text=True, timeout=300)

    shown = cab("--help")  # the docs it points to are the installed ones
    docs = Path(shown.stdout.split("Docs: ")[1].split(" (")[0])
    assert shown.returncode == 0 and docs.is_relative_to(target) and (docs / "tasks-real.md").is_file()
    listing = cab("data", "list", XDG_CACHE_HOME=str(tmp_path / "xdg"), CAB_DATA_DIR="")
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert str(tmp_path / "xdg" / "cab" / "data") in listing.stdout and "[missing: cab data download ETTh1]" in listing.stdout
    results, site = tmp_path / "results", tmp_path / "site"
    smoke = cab("run", "attention=linear", "task=mqar", "pattern=causal_self", "trainer=smoke", "threads=1",
                f"results_dir={results}")
    assert smoke.returncode == 0 and "[ok]" in smoke.stdout, smoke.stdout + smoke.stderr[-2000:]
    built = cab("leaderboard", "build", "--results", str(results), "--out", str(site))
    assert built.returncode == 0, built.stderr[-2000:]
    assert (site / "index.html").is_file() and any((site / "assets").iterdir())
