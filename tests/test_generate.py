"""`cab generate` and the checkpoint `cab run` saves when asked: end to end at smoke scale.

A tiny lm is trained with the smoke trainer and `save_checkpoint=true`; its record names the file; text is
generated from it through the decode path (prefill + steps), of the requested length, and greedy generation
through the decode path equals greedy generation by the parallel forward. The lm's model-level prefill and
step equal its forward for every mechanism with a decode form (float64, random weights).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cab import Pattern, attention_spec, list_attentions
from cab.data import FILES, user_cache_dir

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(os.environ.get("CAB_DATA_DIR") or (SHARED if SHARED.is_dir() else user_cache_dir()))
pytestmark = pytest.mark.skipif(not all((DATA / spec.path).is_file() for spec in FILES.values()),
                                reason=f"no data at {DATA}: run `cab data download` (or set CAB_DATA_DIR)")
DECODING = [n for n in list_attentions(pattern="causal_self") if attention_spec(n).cls.declares_decode()]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from cab.config import register_configs

    register_configs()
    with initialize_config_module(config_module="cab.conf", version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke-trained lm (linear attention) with its checkpoint: -> (record, results dir)."""
    from cab.run.runner import run_job

    results = tmp_path_factory.mktemp("results")
    config = compose(["attention=linear", "task=lm", "pattern=causal_self", "trainer=smoke", "trainer.steps=10",
                      "threads=1", "save_checkpoint=true", f"results_dir={results}"])
    return run_job(config), results


def test_run_saves_the_checkpoint_it_names(trained):
    from cab.results.records import validate

    record, results = trained
    assert record["status"] == "ok", record["error"]
    assert validate(record) == []
    path = Path(record["checkpoint"])
    assert path == results / "checkpoints" / f"{record['run_id']}.pt" and path.is_file()
    saved = torch.load(path, weights_only=False)
    assert saved["config"]["attention"]["name"] == "linear" and saved["run_id"] == record["run_id"]


def test_checkpoint_is_off_by_default_and_not_part_of_the_cell(smoke_config):
    from cab.results.records import run_id_of

    config = smoke_config("attention=linear", "task=lm", "pattern=causal_self")
    assert config["save_checkpoint"] is False
    assert run_id_of(config) == run_id_of({**config, "save_checkpoint": True})  # the same cell, with its weights


def test_generates_text_of_the_requested_length(trained):
    from cab.run.generate import generate_text, load_model

    record, _ = trained
    text, timing = generate_text(record["checkpoint"], prompt="ROMEO:", tokens=40, temperature=1.0, seed=3)
    model, task, _ = load_model(record["checkpoint"])
    assert len(text) == 40 and set(text) <= set(task.corpus.chars)
    stated = sum(block.mixer.state_size(len("ROMEO:") + 39) for block in model.blocks)  # after the last step
    assert timing["per_token_s"] > 0 and timing["state_numbers"] == stated > 0
    again, _ = generate_text(record["checkpoint"], prompt="ROMEO:", tokens=40, temperature=1.0, seed=3)
    assert again == text  # seeded


def test_greedy_generation_by_decode_equals_the_parallel_forward(trained):
    from cab.run.generate import generate_ids, load_model

    record, _ = trained
    model, task, _ = load_model(record["checkpoint"])
    prompt = task.corpus.test[:17][None]
    decoded, _ = generate_ids(model, prompt, 30, temperature=0, path="decode")
    parallel, _ = generate_ids(model, prompt, 30, temperature=0, path="parallel")
    assert decoded.shape == (1, 30) and torch.equal(decoded, parallel)


def test_cli_prints_the_prompt_and_its_continuation(trained, capsys):
    from cab.cli import main

    record, _ = trained
    out = subprocess.run([sys.executable, "-m", "cab.cli", "generate", f"checkpoint={record['checkpoint']}",
                          "prompt=KING:", "tokens=25", "temperature=0", "threads=1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("KING:") and len(out.stdout) == len("KING:") + 25 + 1  # and print's newline
    assert "per generated token" in out.stderr
    assert main(["generate", f"checkpoint={record['checkpoint']}", "attention=softmax"]) == 2  # the wrong file
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trained with attention=linear" in err[0]


@pytest.mark.parametrize("args,message", [
    ([], "checkpoint=PATH is required"),
    (["checkpoint=/nonexistent.pt"], "no such file"),
    (["checkpoint=x.pt", "tokens=0"], "tokens=0"),
    (["checkpoint=x.pt", "colour=red"], "key one of"),
])
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    from cab.cli import main

    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


@pytest.mark.parametrize("name", DECODING)
def test_lm_prefill_and_steps_equal_its_forward(name):
    """The model around the layers (embedding with positions, blocks, norms, head) decodes too."""
    from cab.run.factory import AttentionFactory
    from cab.registry import task_spec

    torch.manual_seed(0)
    task = task_spec("lm").cls(pattern=Pattern.CAUSAL_SELF, seed=0, seq_len=16, d_model=32, num_heads=4, num_layers=2,
                               dropout=0.0)
    model = task.build_model(AttentionFactory(name, Pattern.CAUSAL_SELF, {}, lengths={Pattern.CAUSAL_SELF: (32, 32)}))
    model = model.double().eval()
    ids = torch.randint(0, task.corpus.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel = model(ids)
        logits, states = model.prefill(ids[:, :7])
        outs = [logits]
        for t in range(7, 20):
            logits, states = model.step(ids[:, t : t + 1], states)
            outs.append(logits)
    torch.testing.assert_close(torch.cat(outs, dim=1), parallel, atol=1e-9, rtol=1e-9)
    assert [s.position for s in states] == [20, 20]
