"""Every input is checked before a job starts (issue #22): a bad value is one line on stderr that
names the key, exit code 2, no traceback and no record; every published grid still composes."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cab import Pattern, list_attentions, list_tasks, registry
from cab.cli import main as cab_main
from cab.config import LAST_CHECK, check_overrides, register_configs, validate_overrides
from cab.registry import ChoiceError, attention_spec, task_spec

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()

# (command, overrides, text the one line must hold: the key, and for some what is allowed).
# `{tmp}` is the test's directory; `results_dir` points there unless the case sets it.
BAD_INPUTS = [
    # the eight inputs of the issue
    ("run", ["trainer=smoke", "trainer.steps=-1"], ["trainer.steps=-1", "integer >= 1"]),
    ("run", ["attention=local", "trainer=smoke", "attention.window=abc"], ["attention.window=abc", "integer"]),
    ("run", ["task=mqar", "trainer=smoke", "task.seq_len=7"], ["task.seq_len=7", "even"]),
    ("run", ["trainer=smoke", "attention.foo=1"], ["attention.foo", "hyperparameter 'foo'", "valid: dropout"]),
    ("bench", ["attention=linear", "pattern=causal_self", "lengths=[0]"], ["lengths=[0]", "integers >= 1"]),
    ("bench", ["attention=linear", "pattern=causal_self", "lengths=[abc]"], ["lengths=[abc]", "integers >= 1"]),
    ("run", ["trainer=smoke", "results_dir={tmp}/a_file/results"], ["results_dir=", "a_file is not a directory"]),
    pytest.param("run", ["trainer=smoke", "device=cuda"], ["device=cuda", "no CUDA device"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    pytest.param("bench", ["attention=linear", "device=cuda"], ["device=cuda", "no CUDA device"],
                 marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")),
    ("run", ["trainer=smoke", "device=cuda:99"], ["device=cuda:99"]),
    ("run", ["trainer=smoke", "device=gpu"], ["device=gpu", "expected auto, cpu, cuda"]),
    # trainer
    ("run", ["trainer=smoke", "trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    ("run", ["trainer=cpu", "trainer.lr=-0.1"], ["trainer.lr=-0.1", "> 0"]),
    ("run", ["trainer=smoke", "trainer.nesterov=true"], ["trainer.nesterov", "valid: "]),
    ("run", ["trainer=nope"], ["trainer=nope", "valid: cpu, paper, smoke"]),
    # attention hyperparameters (types from the class's annotations, ranges by name)
    ("run", ["trainer=smoke", "attention.dropout=1.5"], ["attention.dropout=1.5", "in [0, 1]"]),
    ("run", ["attention=performer", "trainer=smoke", "attention.num_features=-4"], ["attention.num_features=-4"]),
    ("run", ["attention=performer", "trainer=smoke", "attention.redraw=maybe"], ["attention.redraw=maybe", "true or false"]),
    ("run", ["attention=linformer", "trainer=smoke", "attention.proj_len=1.5"], ["attention.proj_len=1.5", "integer"]),
    # task parameters, one per task: types, declared ranges and choices, cross-field checks
    ("run", ["task=mqar", "trainer=smoke", "task.num_kv_pairs=100"], ["task.num_kv_pairs=100", "seq_len / 4"]),
    ("run", ["task=mqar_cross", "pattern=causal_cross", "trainer=smoke", "task.num_layers=2"],
     ["task.num_layers", "encoder_layers"]),
    ("run", ["task=gcog", "pattern=noncausal_self", "trainer=smoke", "task.split=random"],
     ["task.split=random", "distractor, systematic, productive"]),
    ("run", ["task=listops", "pattern=noncausal_self", "trainer=smoke", "task.pooling=max"], ["task.pooling=max", "cls, mean"]),
    ("run", ["task=lstf", "pattern=causal_self", "trainer=smoke", "task.label_len=500"], ["task.label_len=500", "seq_len"]),
    ("run", ["task=lm", "trainer=smoke", "task.seq_len=0"], ["task.seq_len=0", ">= 1"]),
    ("run", ["task=mlm", "pattern=noncausal_self", "trainer=smoke", "task.mask_rate=1.5"], ["task.mask_rate=1.5", "[0, 1]"]),
    ("run", ["task=seq2seq", "pattern=causal_cross", "trainer=smoke", "task.noise_density=0"], ["task.noise_density=0"]),
    ("run", ["task=lm", "trainer=smoke", "task.vocab_size=100"], ["task.vocab_size", "task lm has no parameter"]),
    # pattern, logger, the top level
    ("run", ["pattern=sideways"], ["valid patterns:"]),
    ("run", ["trainer=smoke", "logger=wandb", "logger.mode=sometimes"], ["logger.mode=sometimes", "offline, online"]),
    ("run", ["trainer=smoke", "seed=-1"], ["seed=-1", ">= 0"]),
    ("run", ["trainer=smoke", "threads=0"], ["threads=0", ">= 1"]),
    ("run", ["trainer=smoke", "force=yes"], ["force=yes", "true or false"]),
    ("run", ["trainer=smoke", "debug.fail=explode"], ["debug.fail=explode", "exception"]),
    ("run", ["trainer=smoke", "sed=1"], ["sed=1", "no key 'sed'", "seed"]),
    ("run", ["trainer=smoke", "leaderboard_out={tmp}/a_file/site"], ["leaderboard_out=", "a_file is not a directory"]),
    # multiruns: one bad value in a sweep (comma list, range, choice, glob, an experiment's grid)
    ("run", ["trainer=smoke", "seed=1,2"], ["seed=1,2", "a sweep runs with -m"]),
    ("run", ["-m", "trainer=smoke", "trainer.steps=10,0"], ["trainer.steps=0"]),
    ("run", ["-m", "trainer=smoke", "seed=range(-1,2)"], ["seed=-1"]),
    ("run", ["-m", "trainer=cpu", "trainer.lr=choice(0.1,-1)"], ["trainer.lr=-1"]),
    ("run", ["-m", "trainer=smoke", "attention=glob(l*)", "attention.window=3"],
     ["attention.window=3", "has no hyperparameter 'window'"]),
    ("run", ["-m", "trainer=smoke", "attention=local,sliding_window", "attention.window=5,abc"], ["attention.window=abc"]),
    ("run", ["-m", "task=mqar,lm", "trainer=smoke", "task.seq_len=64,7"], ["task.seq_len=7", "task mqar"]),
    ("run", ["-m", "experiment=cpu_leaderboard", "seed=0,-1"], ["seed=-1"]),
    ("run", ["-m", "experiment=quickstart", "trainer.steps=0"], ["trainer.steps=0"]),
    ("run", ["-m", "experiment=zoology_fig2_cpu", "attention=softmax", "grid.cell=L64_kv4,L9"], ["task.seq_len", "L9"]),
    # the launcher's basics
    ("run", ["-m", "trainer=smoke", "launcher=joblib", "hydra.launcher.n_jobs=0"], ["hydra.launcher.n_jobs=0"]),
    ("run", ["-m", "trainer=smoke", "launcher=submitit_local", "hydra.launcher.mem_gb=-8"], ["hydra.launcher.mem_gb=-8"]),
    # cab bench
    ("bench", ["attention=linear", "batch=0"], ["batch=0", ">= 1"]),
    ("bench", ["attention=linear", "dtype=float8"], ["dtype=float8", "float32"]),
    ("bench", ["attention=linear", "dim=100", "num_heads=8"], ["dim=100", "num_heads"]),
    ("bench", ["attention=linear", "directions=[sideways]"], ["directions=[sideways]", "valid directions:"]),
    ("bench", ["attention=linear", "lock_scope=never"], ["lock_scope=never", "job, point"]),
    ("bench", ["attention=linear", "min_length=4096", "max_length=1024"], ["max_length=1024", "min_length"]),
    ("bench", ["attention=linformer", "attention.max_len=512", "lengths=[1024]"], ["lengths=[1024]", "max_len=512"]),
    ("bench", ["attention=linear", "bench=tpu"], ["bench=tpu", "valid: cpu, paper"]),
    ("bench", ["-m", "experiment=efficiency", "repeats=0"], ["repeats=0", ">= 1"]),
    ("bench", ["attention=linear", "results_dir={tmp}/a_file/r"], ["results_dir=", "a_file is not a directory"]),
]


@pytest.fixture(scope="module", autouse=True)
def _registered():
    register_configs()


def _args(command: str, overrides: list[str], tmp: Path) -> list[str]:
    args = [a.replace("{tmp}", str(tmp)) for a in overrides]
    if not any(a.split("=")[0] == "results_dir" for a in args):
        args.append(f"results_dir={tmp / 'results'}")
    return [command, *args]


@pytest.mark.parametrize("command,overrides,needles", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_record(tmp_path, capsys, command, overrides, needles):
    (tmp_path / "a_file").write_text("not a directory")
    code = cab_main(_args(command, overrides, tmp_path))
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2, out.err
    assert len(lines) == 1 and lines[0].startswith("cab: error: "), out.err
    assert "Traceback" not in out.err + out.out
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not list(tmp_path.rglob("*.json")) and not (tmp_path / "results").exists()


@pytest.mark.parametrize("args", [
    ["run", "-m", "experiment=cpu_leaderboard", "trainer.steps=300,-1"],
    ["bench", "attention=linear", "pattern=causal_self", "lengths=[abc]"],
])
def test_the_cab_command_says_one_line(tmp_path, args):
    """The real `cab` command: one line, exit 2, nothing written, not even Hydra's folders."""
    out = subprocess.run([sys.executable, "-m", "cab.cli", *args, f"results_dir={tmp_path / 'r'}",
                          "leaderboard_out=null" if args[0] == "run" else "force=false"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# the registry: every attention's and task's parameters have a schema


@pytest.mark.parametrize("name", list_attentions())
def test_every_attention_has_a_hyperparameter_schema(name):
    """Its fields are the class's keyword hyperparameters; its registered config node passes; an
    unknown key is refused with the valid names; a wrongly typed value is refused."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from cab.schema import attention_schema, validate_attention

    spec = attention_spec(name)
    schema = attention_schema(name)
    keys = {f.alias for f in schema.model_fields.values()}
    assert keys == {"name", *spec.default_hparams()}
    node = ConfigStore.instance().repo["attention"][f"{name}.yaml"].node
    validate_attention(OmegaConf.to_container(node))  # the defaults pass
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(spec.cls.__init__).parameters.values())
    if not accepts_any:
        with pytest.raises(ChoiceError, match=r"has no hyperparameter 'no_such_hparam'; valid: "):
            validate_attention({"name": name, "no_such_hparam": 1})
    for key, default in spec.default_hparams().items():
        if isinstance(default, (bool, int, float)) and default is not None:
            with pytest.raises(ChoiceError, match=rf"attention\.{key}=not-a-number"):
                validate_attention({"name": name, key: "not-a-number"})


@pytest.mark.parametrize("name", list_tasks())
def test_every_task_has_a_parameter_schema(name):
    """Its fields are the constructor's parameters (through **kwargs to a base class), and its
    config at every scale passes."""
    from cab.schema import task_schema, validate_task
    from tests.conftest import compose

    schema = task_schema(name)
    keys = {f.alias for f in schema.model_fields.values()} - {"name"}
    pattern = sorted(task_spec(name).patterns, key=lambda p: list(Pattern).index(p))[0].value
    for scale in ("smoke", "cpu", "paper"):
        config = compose([f"task={name}", f"trainer={scale}", f"pattern={pattern}", "results_dir=/tmp"])
        validate_task(config["task"])
        assert set(config["task"]) - {"name"} <= keys


def test_a_plugin_attention_is_checked_too(tmp_path, capsys, monkeypatch):
    """A user's attention (imports=[...]) gets its schema from its signature: a typo names the real
    hyperparameter, a wrong type is refused."""
    (tmp_path / "my_attention.py").write_text(
        "from cab import MultiHeadAttention, Pattern, register_attention\n"
        "@register_attention('validation_plugin_demo', patterns=set(Pattern))\n"
        "class Demo(MultiHeadAttention):\n"
        "    def __init__(self, dim, num_heads, pattern, temperature: float = 1.0, taps: int = 3):\n"
        "        super().__init__(dim, num_heads, pattern)\n")
    monkeypatch.chdir(tmp_path)
    try:
        base = ["run", "imports=[my_attention]", "attention=validation_plugin_demo", "trainer=smoke",
                f"results_dir={tmp_path / 'r'}"]
        assert cab_main([*base, "attention.temprature=2"]) == 2
        err = capsys.readouterr().err
        assert "attention.temprature" in err and "valid: taps, temperature" in err
        assert cab_main([*base, "attention.taps=2.5"]) == 2
        assert "attention.taps=2.5" in capsys.readouterr().err
    finally:
        from hydra.core.config_store import ConfigStore

        registry._ATTENTIONS.entries.pop("validation_plugin_demo", None)
        ConfigStore.instance().repo["attention"].pop("validation_plugin_demo.yaml", None)
        sys.modules.pop("my_attention", None)


# ---------------------------------------------------------------------------------------------
# valid configurations still pass: every published grid, every scale, the tests' own runs


def _experiments() -> list[tuple[str, str]]:
    out = []
    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        app = "bench" if "cab bench" in path.read_text() else "run"
        out.append((path.stem, app))
    return out


@pytest.mark.parametrize("experiment,app", _experiments())
def test_every_published_grid_passes(experiment, app, tmp_path):
    """Each experiment composed with what it sweeps, and with every attention where it sweeps none."""
    from omegaconf import OmegaConf

    text = OmegaConf.load(REPO / "conf" / "experiment" / f"{experiment}.yaml")
    params = OmegaConf.select(text, "hydra.sweeper.params") or {}
    args = ["-m", f"experiment={experiment}"]
    if "attention" not in params:
        args.append("attention=glob(*)")
    validate_overrides(args, app)  # raises on any bad value
    assert LAST_CHECK["checked"] >= 1


def test_every_task_at_every_scale_with_every_attention_passes():
    validate_overrides(["-m", "task=glob(*)", "trainer=glob(*)", "attention=glob(*)", "pattern=glob(*)"])
    # crossed: task x trainer (task_scale reads both); attention and pattern are swapped in, not composed
    assert LAST_CHECK["composed"] <= 1 + len(list_tasks()) * 3 + 4


def test_the_cpu_grid_is_checked_without_composing_each_job():
    """The leaderboard grid (~1,100 jobs): a composition per task, every attention swapped in, each
    seed checked, so the checks cost about a second, not a composition per job."""
    check_overrides(["-m", "experiment=cpu_leaderboard"], multirun=True)
    assert LAST_CHECK["composed"] <= 1 + len(list_tasks())
    assert LAST_CHECK["checked"] >= len(list_attentions()) + len(list_tasks())


@pytest.mark.parametrize("args", [
    ["attention=linear", "task=mqar", "pattern=causal_self", "trainer=smoke"],
    ["attention=performer", "attention.num_features=128", "task=lm", "pattern=causal_self", "trainer=cpu"],
    ["-m", "attention=softmax,linear,local", "pattern=causal_self,noncausal_self", "task=mqar", "seed=0,1,2"],
    ["-m", "launcher=joblib", "experiment=cpu_leaderboard"],
    ["experiment=cpu_leaderboard", "attention=performer", "task=lm", "pattern=causal_self", "seed=0", "force=true"],
    ["-m", "experiment=zoology_fig2", "attention=softmax,linear"],
    ["trainer=smoke", "debug.fail=nan", "device=cpu", "threads=1", "trainer.eval_every=10"],
    ["task=mqar", "trainer=smoke", "+trainer.betas=[0.9,0.95]", "attention=linformer", "attention.max_len=null"],
    ["trainer=smoke", "--cfg", "job", "trainer.steps=-1"],  # shows a config, runs nothing: not checked
])
def test_valid_commands_pass(args):
    check_overrides(args, multirun="-m" in args)


@pytest.mark.parametrize("args", [
    ["leaderboard", "build", "--results", "{tmp}", "--out", "{tmp}/a_file/site"],
    ["leaderboard", "table", "--results", "{tmp}", "--out", "{tmp}/a_file/table.md"],
    ["bench", "table", "--results", "{tmp}", "--out", "{tmp}/a_file/table.md"],
])
def test_unwritable_out_is_one_line_exit_2(tmp_path, capsys, args):
    (tmp_path / "a_file").write_text("not a directory")
    assert cab_main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out=" in err[0] and "a_file is not a directory" in err[0], err
