"""The real-data tasks: lstf (ETT), lm, mlm and seq2seq (Tiny Shakespeare).

Data comes from CAB_DATA_DIR, or ../shared/data beside the repository (as in CI), or else the user
cache that `cab data download` fills. Smoke runs use one torch thread: on a shared 2-core machine,
two spinning OpenMP threads per job are far slower.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cab import Pattern
from cab.data import FILES, DataError, clear_cache, load_csv_columns, load_text, user_cache_dir, verified_path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = Path(os.environ.get("CAB_DATA_DIR") or (SHARED if SHARED.is_dir() else user_cache_dir()))
pytestmark = pytest.mark.skipif(not all((DATA / spec.path).is_file() for spec in FILES.values()),
                                reason=f"no data at {DATA}: run `cab data download` (or set CAB_DATA_DIR)")


@pytest.fixture(autouse=True)
def data_dir_env(monkeypatch):
    if not os.environ.get("CAB_DATA_DIR"):
        monkeypatch.setenv("CAB_DATA_DIR", str(DATA))


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from cab.config import register_configs

    register_configs()
    with initialize_config_module(config_module="cab.conf", version_base="1.3"):
        return OmegaConf.to_container(hydra_compose(config_name="config", overrides=overrides), resolve=True)


# ------------------------------------------------------------------------------------------------
# data: checksums, loaders, errors


def test_loaders_are_byte_exact_and_cached():
    text = load_text("tinyshakespeare", str(DATA))
    assert text == (DATA / FILES["tinyshakespeare"].path).read_text()
    assert len(text) == 1_115_394 and len(set(text)) == 65
    assert load_text("tinyshakespeare", str(DATA)) is text  # parsed once per process
    table = load_csv_columns("ETTh1", str(DATA))
    assert list(table) == ["date", "HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert len(table["OT"]) == 17_420 and table["date"][0].startswith("2016-07-01 00:00")


def test_data_dir_comes_from_the_config_default_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CAB_DATA_DIR", str(tmp_path))
    assert compose(["task=lm"])["task"]["data_dir"] == str(tmp_path)
    monkeypatch.delenv("CAB_DATA_DIR")
    assert compose(["task=lstf"])["task"]["data_dir"] is None  # null: the user cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    from cab.data import data_dir

    if sys.platform.startswith("linux"):
        assert data_dir(None) == tmp_path / "xdg" / "cab" / "data"


def test_missing_and_altered_files_are_one_line_errors(tmp_path):
    spec = FILES["ETTh2"]
    with pytest.raises(DataError) as missing:
        verified_path("ETTh2", tmp_path)
    message = str(missing.value)
    assert "\n" not in message and spec.path in message and str(tmp_path) in message
    assert f"`cab data download ETTh2 --dir {tmp_path}`" in message

    altered = tmp_path / spec.path
    altered.parent.mkdir(parents=True)
    content = (DATA / spec.path).read_bytes()
    altered.write_bytes(content.replace(b"2016-07-01 00:00:00", b"2016-07-01 00:00:01", 1))
    clear_cache()
    with pytest.raises(DataError) as changed:
        load_csv_columns("ETTh2", str(tmp_path))
    message = str(changed.value)
    assert "\n" not in message and spec.sha256 in message and str(altered) in message and spec.source in message
    assert "--force" in message
    altered.write_bytes(content)  # the pinned bytes are accepted wherever they lie
    assert verified_path("ETTh2", tmp_path) == altered


def test_cli_reports_missing_data_in_one_line_and_help_does_not_import_datasets(tmp_path):
    env = {**os.environ, "CAB_DATA_DIR": str(tmp_path / "nowhere")}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from cab.cli import main; main(sys.argv[1:]);"
         "assert 'datasets' not in sys.modules, 'cab list imported datasets'", "list"],
        capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert all(t in out.stdout for t in ("lstf", "lm", "mlm", "seq2seq"))

    out = subprocess.run(
        [sys.executable, "-m", "cab.cli", "run", "task=lm", "pattern=causal_self", "trainer=smoke", "threads=1",
         f"results_dir={tmp_path / 'r'}"], capture_output=True, text=True, env=env, timeout=120)
    shown = out.stdout + out.stderr
    assert "[failed]" in shown and "tinyshakespeare/input.txt not found" in shown, shown
    assert "`cab data download tinyshakespeare`" in shown and "Traceback" not in shown


# ------------------------------------------------------------------------------------------------
# splits and scaling


def test_text_splits_are_90_5_5_by_position():
    from cab.tasks._text import char_corpus, split_bounds

    corpus = char_corpus(str(DATA))
    n = 1_115_394
    assert split_bounds(n) == {"train": (0, 1_003_854), "val": (1_003_854, 1_059_624), "test": (1_059_624, n)}
    assert (corpus.train.numel(), corpus.val.numel(), corpus.test.numel()) == (1_003_854, 55_770, 55_770)
    text = load_text("tinyshakespeare", str(DATA))
    assert "".join(corpus.chars[i] for i in corpus.test[-20:]) == text[-20:]


def test_ett_split_follows_informer_and_scaler_sees_train_only():
    from cab.tasks.lstf import ForecastTask, load_series, split_borders, standardise

    assert split_borders(96) == {"train": (0, 8640), "val": (8640 - 96, 11_520), "test": (11_520 - 96, 14_400)}
    task = ForecastTask(Pattern.NONCAUSAL_SELF, 0, seq_len=96, label_len=48, pred_len=24, data_dir=str(DATA))
    assert len(task.starts["train"]) == 8640 - 96 - 24 + 1
    assert len(task.starts["test"]) == 2880 - 24 + 1  # every test window, none dropped
    assert int(task.starts["test"][0]) + 96 == 11_520  # first forecast starts at the test split's first row

    series = load_series("ETTh1", "M", str(DATA))
    train = series.values[:8640].double()
    assert torch.allclose(train.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(train.std(0, unbiased=False), torch.ones(7, dtype=torch.float64), atol=1e-5)
    assert series.values[11_520:14_400].mean(0).abs().max() > 0.1  # test rows are not re-centred

    raw = torch.randn(100, 3, dtype=torch.float64)
    changed = raw.clone()
    changed[60:] *= 50  # what happens after the training rows must not move the scaler
    a, mean_a, std_a = standardise(raw, 60)
    b, mean_b, std_b = standardise(changed, 60)
    assert torch.equal(mean_a, mean_b) and torch.equal(std_a, std_b) and torch.allclose(a[:60], b[:60])


def test_lstf_validation_reads_every_strided_window_and_the_test_split_whole():
    from cab.tasks.lstf import ForecastTask

    task = ForecastTask(Pattern.NONCAUSAL_SELF, 0, seq_len=96, label_len=48, pred_len=96, d_model=8, num_heads=2,
                        enc_layers=1, data_dir=str(DATA), validation_stride=4)
    seen = []
    task._score = lambda model, starts: seen.append(starts) or {"mse": 0.0, "mae": 0.0}
    task.validate(None)
    task.evaluate(None)
    assert len(seen[0]) == 697 and torch.equal(seen[0], task.starts["val"][::4])  # ceil(2,785 / 4)
    assert len(seen[1]) == 2785  # the test split is always scored whole
    whole = ForecastTask(Pattern.NONCAUSAL_SELF, 0, seq_len=96, label_len=48, pred_len=96, data_dir=str(DATA))
    assert whole.validation_stride == 1  # Informer's protocol by default


def test_calendar_features_match_informer_timef():
    from cab.tasks.lstf import time_features

    f = time_features(["2016-07-01 00:00:00", "2017-12-31 23:00:00"])
    # 2016-07-01 is a Friday (weekday 4), day of year 183; 2017-12-31 a Sunday, day 365
    expected = torch.tensor([[-0.5, 4 / 6 - 0.5, -0.5, 182 / 365 - 0.5], [0.5, 0.5, 30 / 30 - 0.5, 364 / 365 - 0.5]])
    assert torch.allclose(f, expected)


# ------------------------------------------------------------------------------------------------
# baselines on known inputs


def test_forecast_baselines_on_known_series():
    from cab.tasks.lstf import apply_linear, fit_linear, mse_mae, repeat_last

    x = torch.tensor([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]])  # (B=1, L=3, C=2)
    assert torch.equal(repeat_last(x, 2), torch.tensor([[[3.0, 30.0], [3.0, 30.0]]]))
    assert mse_mae(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])) == (5.0, 2.0)

    # an exactly linear world: y = x @ A + b, shared by the series; least squares must recover it
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    xs = torch.randn(200, 8, 3, generator=g, dtype=torch.float64)
    ys = (xs.permute(0, 2, 1) @ a + b).permute(0, 2, 1)  # (200, 4, 3)
    w = fit_linear(xs.float(), ys.float())
    assert torch.allclose(w[:-1], a, atol=1e-3) and torch.allclose(w[-1], b, atol=1e-3)
    assert mse_mae(apply_linear(w, xs[:5].float()), ys[:5])[0] < 1e-6


def test_unigram_and_majority_baselines_on_known_text():
    from cab.tasks._text import majority_accuracy, unigram_bits_per_char

    train = torch.tensor([0, 0, 1])  # counts a=2, b=1, c=0 -> add-one: 3/6, 2/6, 1/6
    targets = torch.tensor([0, 2])
    assert unigram_bits_per_char(train, targets, 3) == pytest.approx((math.log2(2) + math.log2(6)) / 2)
    assert majority_accuracy(train, targets, 3) == 0.5


def test_lstf_reference_metrics_beat_or_match_trivial_checks():
    from cab.tasks.lstf import ForecastTask

    task = ForecastTask(Pattern.NONCAUSAL_SELF, 0, seq_len=48, label_len=24, pred_len=24, data_dir=str(DATA))
    ref = task.reference_metrics()
    x, *_, y = task.windows(task.starts["test"])
    assert ref["mse_repeat_last"] == pytest.approx(float(((x[:, -1:] - y) ** 2).double().mean()))
    assert ref["mse_linear"] < ref["mse_repeat_last"]  # hourly load has a daily cycle a linear map captures


# ------------------------------------------------------------------------------------------------
# corruption schemes


def test_span_corruption_round_trips_t5_style():
    from cab.tasks.seq2seq import corrupt, span_counts, span_noise_mask

    assert span_counts(128, 0.15, 3.0) == (19, 6)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 65, (16, 128), generator=g)
    noise = span_noise_mask(16, 128, 0.15, 3.0, g)
    assert (noise.sum(1) == 19).all() and not noise[:, 0].any()  # a gap comes first
    starts = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]
    assert (starts.sum(1) == 6).all()
    source, target = corrupt(ids, noise, sentinel0=65, eos=99)
    assert source.shape == (16, 128 - 19 + 6) and target.shape == (16, 19 + 6 + 1)
    for row in range(16):  # put the spans back: the original text
        spans, current = {}, None
        for t in target[row, :-1].tolist():
            if t >= 65:
                current = t
                spans[current] = []
            else:
                spans[current].append(t)
        rebuilt = [c for t in source[row].tolist() for c in (spans[t] if t >= 65 else [t])]
        assert rebuilt == ids[row].tolist()


def test_bert_masking_rates():
    from cab.tasks.mlm import mask_tokens

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 65, (400, 100), generator=g)
    inputs, labels = mask_tokens(ids, 65, 65, g)
    chosen = labels != -100
    assert (chosen.sum(1) == 15).all() and torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    masked = (inputs[chosen] == 65).double().mean()
    kept = (inputs[chosen] == ids[chosen]).double().mean()
    assert 0.77 < masked < 0.83 and 0.08 < kept < 0.14  # 10% kept + random draws that hit the same char


# ------------------------------------------------------------------------------------------------
# CAB's rule in each backbone, and smoke runs of every task × pattern


def _tested_roles(task_name: str, pattern: Pattern, params: dict) -> dict[str, list[str]]:
    from cab.registry import task_spec
    from cab.run.factory import AttentionFactory

    task = task_spec(task_name).cls(pattern=pattern, seed=0, data_dir=str(DATA), **params)
    factory = AttentionFactory("linear", pattern)
    task.build_model(factory)
    return {p.value: [type(layer).__name__ for layer in factory.all_layers if layer.pattern is p] for p in Pattern}


@pytest.mark.parametrize("pattern", ["noncausal_self", "causal_self", "noncausal_cross"])
def test_lstf_replaces_only_the_role_under_test(pattern):
    roles = _tested_roles("lstf", Pattern.parse(pattern), dict(seq_len=48, label_len=24, pred_len=24, d_model=16,
                                                              num_heads=2, enc_layers=2, dec_layers=1))
    assert {k: len(v) for k, v in roles.items()} == {"noncausal_self": 2, "causal_self": 1, "noncausal_cross": 1,
                                                      "causal_cross": 0}
    for role, classes in roles.items():
        assert all(c == ("LinearAttention" if role == pattern else "SoftmaxAttention") for c in classes)


def test_seq2seq_uses_causal_cross_into_the_encoder():
    roles = _tested_roles("seq2seq", Pattern.CAUSAL_CROSS, dict(seq_len=40, d_model=16, num_heads=2, enc_layers=1,
                                                                 dec_layers=2, eval_chars=2000))
    assert roles["causal_cross"] == ["LinearAttention"] * 2
    assert roles["noncausal_self"] == ["SoftmaxAttention"] and roles["causal_self"] == ["SoftmaxAttention"] * 2


CELLS = [("lstf", "noncausal_self"), ("lstf", "causal_self"), ("lstf", "noncausal_cross"), ("lm", "causal_self"),
         ("mlm", "noncausal_self"), ("seq2seq", "noncausal_self"), ("seq2seq", "causal_self"),
         ("seq2seq", "causal_cross")]


@pytest.mark.parametrize("task,pattern", CELLS)
def test_smoke_run(task, pattern, tmp_path):
    from cab.run.runner import run_job

    config = compose([f"task={task}", f"pattern={pattern}", "attention=linear", "trainer=smoke", "trainer.steps=10",
                      "threads=1", f"results_dir={tmp_path}"])
    record = run_job(config)
    assert record["status"] == "ok", record["error"]
    assert (tmp_path / f"{record['run_id']}.json").is_file()
    metrics, info = record["metrics"], record["metric_info"]
    assert set(metrics) == set(info) and record["primary_metric"] in metrics
    assert all(math.isfinite(v) for v in metrics.values())
    assert record["reference_metrics"] and all(math.isfinite(v) for v in record["reference_metrics"].values())
    assert record["cost"]["attention_flops_per_example"] > 0
    if task == "lstf":
        assert metrics["mae"] ** 2 <= metrics["mse"] + 1e-9  # Jensen: mean |e| squared <= mean e²
    else:
        assert 0 < metrics.get("accuracy", 0.5) < 1 and 0 < metrics["bpc"] < math.log2(130)
    if task == "lm":
        assert "bpc_2x" in metrics  # the positions extend to twice the training context
