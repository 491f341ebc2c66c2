"""The `cab` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cab.results.records import validate


def cab(*args: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cab.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def _imported(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code` (its stdout silenced)."""
    script = (
        "import contextlib, io, sys\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + f"print(','.join(m for m in {modules!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]


def test_help_and_list_import_no_heavy_packages():
    """`cab --help` imports nothing heavy at all; `cab list` loads the attentions (torch), never the
    packages only some jobs need."""
    assert _imported("from cab.cli import main\nassert main(['--help']) == 0",
                     ("torch", "hydra", "omegaconf", "rich", "numpy")) == []
    assert _imported("from cab.cli import main\nassert main(['list']) == 0", ("wandb", "datasets", "fvcore")) == []


def test_results_and_leaderboard_need_no_torch(tmp_path):
    """Reading records is light: the tables of `cab bench table` and `cab leaderboard table` import
    neither torch nor Hydra. Building the site loads the attention registry (each mechanism page
    describes its class: paper, family, patterns, defaults), hence torch, but never Hydra."""
    published = str(Path(__file__).resolve().parents[1] / "leaderboard" / "results")
    tables = (
        "from cab.cli import main\n"
        "import cab.results.environment, cab.results.markers, cab.results.status\n"
        f"assert main(['bench', 'table', '--results', {published + '/cpu/efficiency'!r}]) == 0\n"
        f"assert main(['leaderboard', 'table', '--results', {published!r}]) == 0\n"
    )
    assert _imported(tables, ("torch", "hydra", "omegaconf")) == []
    build = ("from cab.cli import main\n"
             f"assert main(['leaderboard', 'build', '--results', {published!r}, '--out', {str(tmp_path)!r}, '-q']) == 0")
    assert _imported(build, ("hydra", "omegaconf")) == []


def test_list_shows_attentions_and_tasks():
    out = cab("list")
    assert out.returncode == 0
    assert "softmax" in out.stdout and "linear" in out.stdout and "mqar" in out.stdout


@pytest.mark.parametrize(
    "override,needle",
    [
        ("attention=nope", "valid attentions:"),
        ("task=nope", "valid tasks:"),
        ("pattern=sideways", "valid patterns:"),
        ("pattern=noncausal_cross", "does not exercise pattern noncausal_cross"),
    ],
)
def test_bad_override_is_one_line_and_exit_2(tmp_path, override, needle):
    out = cab("run", "task=mqar", override, "trainer=smoke", f"results_dir={tmp_path}")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_smoke_run_writes_a_record_and_builds_the_page(tmp_path):
    results = tmp_path / "results"
    out = cab("run", "attention=linear", "task=mqar", "pattern=causal_self", "trainer=smoke", f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [path] = results.glob("*.json")
    record = json.loads(path.read_text())
    assert validate(record) == [] and record["status"] == "ok"
    assert record["command"].startswith("cab run") and "attention=linear" in record["command"]
    assert path.stem == record["run_id"]
    # rerun: skipped, no second record
    again = cab("run", "attention=linear", "task=mqar", "pattern=causal_self", "trainer=smoke", f"results_dir={results}", cwd=tmp_path)
    assert again.returncode == 0 and "skipped" in again.stdout
    assert len(list(results.glob("*.json"))) == 1

    site = tmp_path / "site"
    built = cab("leaderboard", "build", "--results", str(results), "--out", str(site))
    assert built.returncode == 0, built.stderr
    html = (site / "index.html").read_text()
    assert "mqar" in html or (site / "data").is_dir()


@pytest.mark.slow
def test_multirun_writes_one_record_per_job(tmp_path):
    results = tmp_path / "results"
    out = cab("run", "-m", "attention=softmax,linear", "task=mqar", "pattern=noncausal_self", "trainer=smoke",
              "trainer.steps=5", f"results_dir={results}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert sorted(r["attention"] for r in records) == ["linear", "softmax"]
    assert all(r["status"] == "ok" for r in records)


USER_ATTENTION = '''
"""A user's attention outside any package (test double): exact attention via SDPA."""
import torch.nn.functional as F
from cab import MultiHeadAttention, Pattern, register_attention

@register_attention("my_user_attention", patterns={Pattern.CAUSAL_SELF},
                    unsupported={Pattern.NONCAUSAL_SELF: "demo", Pattern.NONCAUSAL_CROSS: "demo", Pattern.CAUSAL_CROSS: "demo"})
class MyAttention(MultiHeadAttention):
    def __init__(self, dim, num_heads, pattern, temperature: float = 1.0):
        super().__init__(dim, num_heads, pattern)
        self.temperature = temperature
    def attend(self, q, k, v, key_padding_mask):
        return F.scaled_dot_product_attention(q / self.temperature, k, v, is_causal=True)
    def core_flops(self, batch, len_q, len_k):
        return 4 * batch * len_q * len_k * self.dim
'''


@pytest.mark.slow
@pytest.mark.parametrize("how", ["module", "file"])
def test_user_module_outside_any_package(tmp_path, how):
    """`imports=[...]` registers a user's attention with no YAML and no edit to the repository."""
    (tmp_path / "my_attention.py").write_text(USER_ATTENTION)
    name = "my_attention" if how == "module" else str(tmp_path / "my_attention.py")
    out = cab("run", f"imports=[{name}]", "attention=my_user_attention", "attention.temperature=2.0", "task=mqar",
              "pattern=causal_self", "trainer=smoke", "trainer.steps=3", f"results_dir={tmp_path / 'r'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*.json")]
    assert record["status"] == "ok" and record["config"]["attention"] == {"name": "my_user_attention", "temperature": 2.0}
