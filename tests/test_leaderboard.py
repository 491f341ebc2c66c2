"""The leaderboard builder without a browser: real and hand-written records in, data files out.

Browser tests (rendering, sorting, plots, console errors, script injection) are in
tests/test_leaderboard_browser.py.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from cab.leaderboard import cli as leaderboard_cli
from cab.leaderboard import data as lbd
from cab.leaderboard import markdown as leaderboard_markdown
from cab.leaderboard import site as leaderboard
from leaderboard_fixture import demo_records, efficiency_record, train_record, write_records


def read_js(path: Path) -> tuple[str, object]:
    """(key, value) of a data file `(window.CAB_DATA=...)[key]=<json>;`."""
    text = path.read_text()
    m = re.fullmatch(r'\(window\.CAB_DATA=window\.CAB_DATA\|\|\{\}\)\[("[^"]+")\]=(.*);\n', text, re.S)
    assert m, text[:200]
    return json.loads(m.group(1)), json.loads(m.group(2))


def build(tmp_path, records, **kw):
    results = write_records(records, tmp_path / "results")
    out = tmp_path / "site"
    kw.setdefault("normalisation", tmp_path / "no-normalisation.json")
    summary = leaderboard.build(results, out, warn=lambda m: None, **kw)
    return out, summary


def table_of(out: Path, pattern: str, scale: str = "cpu") -> dict:
    _, index = read_js(out / "data" / "index.js")
    meta = next(t for t in index["tables"] if t["pattern"] == pattern and t["scale"] == scale)
    return read_js(out / "data" / f"{meta['file']}.js")[1]


# ------------------------------------------------------------------------------------------------
# real records from the runner


def _compose(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from cab.config import register_configs

    register_configs()
    with initialize_config_module(config_module="cab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    """Records written by the real runner (cab.run.runner.run_job, what `cab run` calls per job), cut to
    one training step on tiny data: softmax × two seeds, linear × one seed, and one injected
    out-of-memory failure."""
    from cab.run.runner import run_job

    results = tmp_path_factory.mktemp("real") / "results"
    base = ["task=mqar", "pattern=causal_self", "trainer=smoke", "trainer.steps=1", "trainer.batch_size=8",
            "task.train_examples=32", "task.test_examples=32", f"results_dir={results}"]
    for attention, seed in (("softmax", 0), ("softmax", 1), ("linear", 0)):
        run_job(_compose(base + [f"attention={attention}", f"seed={seed}"]))
    run_job(_compose(base + ["attention=linear", "seed=1", "debug.fail=oom"]))
    return results


def test_build_from_real_records(real_results, tmp_path):
    out = tmp_path / "site"
    summary = leaderboard.build(real_results, out, normalisation=tmp_path / "none.json", warn=lambda m: None)
    assert summary["records"] == 4 and summary["skipped"] == 0
    for page in leaderboard.PAGES:
        assert (out / page).exists()
    assert (out / "assets" / "common.js").exists() and (out / "assets" / "cab.css").exists()
    table = table_of(out, "causal_self", scale="smoke")
    assert table["hardware"] and table["scale"] == "smoke"
    assert [r["attention"] for r in table["rows"]] == ["linear", "softmax"]
    cells = {(c["row"].split("\x00")[0], c["task"]): c for c in table["cells"]}
    soft = cells[("softmax", "mqar")]
    values = [json.loads(p.read_text())["metrics"]["accuracy"] for p in real_results.glob("*.json")
              if json.loads(p.read_text())["attention"] == "softmax"]
    mean = sum(values) / 2
    assert soft["status"] == "ok" and soft["metrics"]["accuracy"][0] == pytest.approx(mean)
    assert soft["metrics"]["accuracy"][1] == pytest.approx(abs(values[0] - values[1]) / math.sqrt(2))
    assert soft["metrics"]["accuracy"][2] == 2
    # the injected OOM seed is counted beside the finished one, not averaged and not hidden
    lin = cells[("linear", "mqar")]
    assert lin["counts"] == {"ok": 1, "oom": 1} and lin["metrics"]["accuracy"][1:] == [None, 1]
    assert any(run[2] == "oom" for run in lin["runs"])
    # the baseline from reference_metrics becomes a reference row on the accuracy column
    assert table["references"] == [{"label": "guess a context value", "values": {"mqar": {"accuracy": 0.25}}}]
    assert table["tasks"]["mqar"]["metric_info"]["loss"]["higher_is_better"] is False
    # the runner writes the gate each record was judged by; one training step has not learnt MQAR
    from cab.gates import GATES

    assert all(json.loads(p.read_text())["gate"] == GATES["mqar"].as_dict() for p in real_results.glob("*.json")
               if json.loads(p.read_text())["status"] == "ok")
    gate = table["tasks"]["mqar"]["gate"]
    assert gate["status"] == "not_learnt" and gate["source"] == "record" and gate["n"] == 2
    # every run has a page entry with its command, config and environment
    _, index = read_js(out / "data" / "index.js")
    for path in real_results.glob("*.json"):
        rec = json.loads(path.read_text())
        shard = lbd.run_shard(rec["run_id"], index["run_shards"])
        _, runs = read_js(out / "data" / "runs" / f"{shard}.js")
        run = runs[rec["run_id"]]
        assert run["command"] == rec["command"] and run["config"] == rec["config"] and run["env"]["git_commit"] == rec["env"]["git_commit"]
        assert run["scale"] == "smoke" and run["hardware"] == rec["hardware"]


def test_cli_build_and_errors(real_results, tmp_path, capsys):
    out = tmp_path / "site"
    assert leaderboard_cli.main(["build", "--results", str(real_results), "--out", str(out), "--normalisation", str(tmp_path / "n.json")]) == 0
    assert "Built" in capsys.readouterr().out
    for argv, needle in ((["build", "--results", str(tmp_path / "missing")], "does not exist"),
                         (["frobnicate"], "invalid choice"), ([], "choose a command"),
                         (["serve", "--dir", str(tmp_path / "nothing")], "no index.html"),
                         (["serve", "--dir", str(out), "--port", "99999"], "not in 0..65535"),
                         (["build", "--bogus"], "unrecognized")):
        assert leaderboard_cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and err.startswith("cab leaderboard: error:"), err


def test_cab_command_dispatches(tmp_path):
    results = write_records([train_record("softmax", "mqar", "causal_self")], tmp_path / "r")
    proc = subprocess.run([sys.executable, "-m", "cab.cli", "leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "s")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s" / "index.html").exists()


def test_serve(tmp_path):
    out, _ = build(tmp_path, [train_record("softmax", "mqar", "causal_self")])
    proc = subprocess.Popen([sys.executable, "-m", "cab.cli", "leaderboard", "serve", "--dir", str(out), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        body = urllib.request.urlopen(url + "index.html", timeout=10).read().decode()
        assert "cab leaderboard" in body
        assert urllib.request.urlopen(url + "data/index.js", timeout=10).status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------------
# untrusted input


EVIL = ['<script>window.__xss=1</script>', '"><img src=x onerror="window.__xss=2">', "</script><!--", "'; alert(1); '", "&amp;<b>bold</b>"]


def test_record_strings_are_escaped(tmp_path):
    records = []
    for i, s in enumerate(EVIL):
        r = train_record(f"att{i}{s}", f"task{s}", "causal_self", seed=0)
        r["metric_info"] = {f"acc{s}": {"higher_is_better": True, "description": s}}
        r["metrics"] = {f"acc{s}": 0.5}
        r["primary_metric"] = f"acc{s}"
        r["command"] = f"cab run {s}"
        r["config"]["attention"]["evil"] = s
        records.append(r)
    failed = train_record("x<script>", "mqar", "causal_self", status="failed")
    failed["error"] = {"type": "RuntimeError", "message": "</script><script>window.__xss=3</script>", "traceback": "<!-- -->"}
    records.append(failed)
    unsupported = train_record("y", "mqar", "causal_self", status="unsupported")
    unsupported["reason"] = "<img src=x onerror=alert(1)>"
    records.append(unsupported)
    gated = train_record("softmax", "evil_gate", "causal_self")
    gated["gate"] = {"reference": "softmax", "metric": "</script><script>window.__xss=4</script>", "higher_is_better": True,
                     "baselines": ["<img src=x onerror=alert(2)>"], "margin": 0.0, "floor": None}
    records.append(gated)
    out, summary = build(tmp_path, records)
    assert summary["skipped"] == 0
    for path in (out / "data").rglob("*.js"):
        text = path.read_text()
        for needle in ("<script", "</script", "<!--", "<img", "<b>"):
            assert needle not in text.lower(), (path, needle)
        key, value = read_js(path)  # and the strings survive unchanged through the escaping
    table = table_of(out, "causal_self")
    assert {r["attention"] for r in table["rows"]} >= {f"att{i}{s}" for i, s in enumerate(EVIL)}
    cells = {c["row"].split("\x00")[0]: c for c in table["cells"]}
    assert cells["x<script>"]["note"] == "RuntimeError: </script><script>window.__xss=3</script>"
    assert cells["y"]["note"] == "<img src=x onerror=alert(1)>"
    # Python-written HTML holds no record string
    for page in leaderboard.PAGES:
        html = (out / page).read_text()
        assert "__xss" not in html and "onerror" not in html
    # the JavaScript never assigns HTML
    for js in (out / "assets").glob("*.js"):
        code = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in code, (js.name, sink)


def test_js_json_escapes_script_breakers():
    text = leaderboard.js_json({"a": "</script><!--x-->", "b": "\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!--x-->", "b": "\u2028&"}


def test_malformed_files_are_reported_and_skipped(tmp_path, capsys):
    results = write_records([train_record("softmax", "mqar", "causal_self")], tmp_path / "results")
    sub = results / "nested" / "deeper"
    sub.mkdir(parents=True)
    (sub / "truncated.json").write_text('{"schema": "cab.result/1", "kind": "tra')
    (results / "unknown_schema.json").write_text(json.dumps(dict(train_record("a", "mqar", "causal_self"), schema="cab.result/99")))
    (results / "list.json").write_text("[1, 2, 3]")
    (results / "bad_types.json").write_text(json.dumps(dict(train_record("b", "mqar", "causal_self"), attention=["x"])))
    (results / "empty.json").write_text("")
    bad_status = dict(train_record("c", "mqar", "causal_self"), status="exploded")
    (results / "bad_status.json").write_text(json.dumps(bad_status))
    assert leaderboard_cli.main(["build", "--results", str(results), "--out", str(tmp_path / "site"), "--normalisation", str(tmp_path / "n.json")]) == 0
    err = capsys.readouterr().err
    for name in ("truncated.json", "unknown_schema.json", "list.json", "bad_types.json", "empty.json", "bad_status.json"):
        assert name in err, name
    _, index = read_js(tmp_path / "site" / "data" / "index.js")
    assert index["records"] == 1 and index["skipped_count"] == 6


def test_non_numeric_metrics_and_duplicates(tmp_path):
    a = train_record("softmax", "mqar", "causal_self", seed=0, metrics={"accuracy": 0.5, "loss": "oops"})
    b = dict(train_record("softmax", "mqar", "causal_self", seed=1, metrics={"accuracy": float("nan"), "loss": 1.0}))
    copy = dict(a, started_at="2027-01-01T00:00:00+00:00", metrics={"accuracy": 0.7, "loss": 1.0})
    results = write_records([a, b], tmp_path / "results")
    (results / "copy").mkdir()
    (results / "copy" / "dup.json").write_text(json.dumps(copy))
    warnings = []
    leaderboard.build(results, tmp_path / "site", normalisation=tmp_path / "n.json", warn=warnings.append)
    assert any("duplicate run_id" in w for w in warnings)
    cell = table_of(tmp_path / "site", "causal_self")["cells"][0]
    assert cell["metrics"]["accuracy"] == [0.7, None, 1]  # the later duplicate kept; NaN dropped
    assert "loss" in cell["metrics"] and cell["metrics"]["loss"][2] == 2


# ------------------------------------------------------------------------------------------------
# cells, statuses, references


def test_statuses_are_never_blank(tmp_path):
    records = [train_record("softmax", "mqar", "causal_self")]
    for status in ("unsupported", "failed", "oom", "nan", "timeout"):
        records.append(train_record(status + "_att", "mqar", "causal_self", status=status))
    out, _ = build(tmp_path, records)
    cells = {c["row"].split("\x00")[0]: c for c in table_of(out, "causal_self")["cells"]}
    assert cells["unsupported_att"]["status"] == "unsupported"
    assert cells["unsupported_att"]["note"] == "unsupported_att has no form for causal self attention"
    assert cells["oom_att"]["note"].startswith("OutOfMemoryError: CUDA out of memory")
    for status in ("failed", "nan", "timeout"):
        assert cells[status + "_att"]["status"] == status and cells[status + "_att"]["note"]
        assert cells[status + "_att"]["metrics"] == {}


def test_reference_rows_follow_metric_prefix(tmp_path):
    out, _ = build(tmp_path, [train_record("softmax", "forecasting", "noncausal_cross"), train_record("softmax", "lm", "causal_self")])
    assert table_of(out, "noncausal_cross")["references"] == [{"label": "last value", "values": {"forecasting": {"mse": 1.25, "mae": 0.95}}}]
    assert table_of(out, "causal_self")["references"] == [{"label": "unigram", "values": {"lm": {"perplexity": 210.0}}}]


def test_seed_dependent_references_are_averaged_over_seeds(tmp_path):
    """A baseline drawn with the data (gCOG's chance depends on the seed's test set) is the mean over
    seeds, each seed counted once however many attentions ran it."""
    records = []
    for attention, seeds in (("a", (0, 1)), ("b", (0,)), ("c", (0,))):
        for seed in seeds:
            r = train_record(attention, "mqar", "causal_self", seed=seed)
            r["reference_metrics"] = {"accuracy_chance": 0.30 if seed == 0 else 0.40}
            records.append(r)
    out, _ = build(tmp_path, records)
    (row,) = [r for r in table_of(out, "causal_self")["references"] if r["label"] == "chance"]
    assert row["values"]["mqar"]["accuracy"] == pytest.approx(0.35)


def test_reference_names_map_to_metrics():
    # "mse_last_value" is the mse of the last-value baseline; a name with no metric prefix is in the primary metric
    tasks = {"t": {"primary_metric": "mse", "metric_info": {"mse": {}, "mae": {}, "mae_scaled": {}},
                   "references": {"mse_last_value": 1.0, "mae_scaled_last_value": 2.0, "chance": 0.1,
                                  "novel_fraction/split_a": 0.0}}}  # a statistic of the data, not a baseline
    rows = {r["label"]: r["values"]["t"] for r in lbd._reference_rows(tasks)}
    assert rows == {"chance": {"mse": 0.1}, "last value": {"mse": 1.0, "mae_scaled": 2.0}}


# ------------------------------------------------------------------------------------------------
# the aggregate


def _known_table():
    """Two attentions, two tasks: t1 has acc (higher better) and err (lower better), t2 has acc."""
    def cell(row, task, metrics, status="ok"):
        return {"row": row, "task": task, "status": status, "metrics": {k: [v, None, 1] for k, v in metrics.items()}}

    return {
        "scale": "cpu", "pattern": "causal_self",
        "rows": [{"id": "A", "attention": "A", "variant": ""}, {"id": "B", "attention": "B", "variant": ""}],
        "tasks": {"t1": {"metric_info": {"acc": {"higher_is_better": True}, "err": {"higher_is_better": False}, "loss": {"higher_is_better": False}}},
                  "t2": {"metric_info": {"acc": {"higher_is_better": True}}}},
        "cells": [cell("A", "t1", {"acc": 0.9, "err": 0.1, "loss": 0.3}), cell("A", "t2", {"acc": 0.6}),
                  cell("B", "t1", {"acc": 0.5, "err": 0.3, "loss": 0.9}), cell("B", "t2", {}, status="failed")],
    }


def test_aggregate_on_known_numbers():
    norm = {"version": 1, "constants": {"cpu": {"causal_self": {
        "t1": {"acc": {"mean": 0.7, "std": 0.2, "higher_is_better": True}, "err": {"mean": 0.2, "std": 0.1, "higher_is_better": False}},
        "t2": {"acc": {"mean": 0.5, "std": 0.05, "higher_is_better": True}}}}}}
    agg = lbd.aggregate_table(_known_table(), norm)
    a, b = agg["rows"]["A"], agg["rows"]["B"]
    # A: t1 = mean(+(0.9-0.7)/0.2, -(0.1-0.2)/0.1) = mean(1, 1) = 1; t2 = (0.6-0.5)/0.05 = 2; CI = 1.5
    assert a["task_scores"] == {"t1": pytest.approx(1.0), "t2": pytest.approx(2.0)}
    assert a["score"] == pytest.approx(1.5) and a["complete"]
    # B: t1 = mean(-1, -1) = -1; t2 failed -> partial aggregate over the one task it finished
    assert b["task_scores"] == {"t1": pytest.approx(-1.0)} and b["score"] == pytest.approx(-1.0)
    assert not b["complete"] and b["tasks_used"] == 1
    # no constants for another scale: no aggregate rather than a made-up one
    assert lbd.aggregate_table(dict(_known_table(), scale="paper"), norm)["rows"] == {}


def test_freeze_normalisation_on_known_numbers():
    frozen = lbd.freeze_normalisation([_known_table()])
    t1 = frozen["constants"]["cpu"]["causal_self"]["t1"]
    assert t1["acc"]["mean"] == pytest.approx(0.7) and t1["acc"]["std"] == pytest.approx(0.2)  # population std
    assert t1["err"]["higher_is_better"] is False and t1["err"]["std"] == pytest.approx(0.1)
    assert "loss" not in t1  # the training objective is not aggregated
    assert "t2" not in frozen["constants"]["cpu"]["causal_self"]  # one finished attention: no spread
    assert lbd.check_normalisation(frozen) == []
    # frozen constants reproduce z = ±1 for the two attentions
    agg = lbd.aggregate_table(_known_table(), frozen)
    assert agg["rows"]["A"]["score"] == pytest.approx(1.0) and agg["rows"]["B"]["score"] == pytest.approx(-1.0)


def test_freeze_cli_writes_once_and_site_publishes_it(tmp_path, capsys):
    results = write_records(demo_records(seeds=2), tmp_path / "results")
    norm = tmp_path / "lb" / "normalisation-v3.json"
    argv = ["build", "--results", str(results), "--out", str(tmp_path / "site"), "--normalisation", str(norm), "--freeze-normalisation", "-q"]
    assert leaderboard_cli.main(argv) == 0
    frozen = json.loads(norm.read_text())
    assert frozen["version"] == 3 and frozen["schema"] == lbd.NORMALISATION_SCHEMA
    assert set(frozen["constants"]["cpu"]) == {"noncausal_self", "causal_self", "noncausal_cross", "causal_cross"}
    assert (tmp_path / "site" / "data" / "normalisation-v3.json").read_text() == norm.read_text()
    _, index = read_js(tmp_path / "site" / "data" / "index.js")
    assert index["normalisation"]["version"] == 3
    table = table_of(tmp_path / "site", "noncausal_self")
    # listops has constants frozen but softmax does not clear the demo's gate there: left out
    assert "listops" in frozen["constants"]["cpu"]["noncausal_self"]
    assert table["aggregate"]["tasks"] == ["forecasting", "mqar"] and list(table["aggregate"]["excluded"]) == ["listops"]
    assert all(r["score"] is not None for r in table["aggregate"]["rows"].values())
    capsys.readouterr()
    # frozen means frozen: a second freeze into the same file is refused
    assert leaderboard_cli.main(argv) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_sort_direction_is_in_the_data(tmp_path):
    """The site sorts best-first by metric_info[m].higher_is_better (checked in the browser test);
    here: the direction reaches the data, and a lower-is-better metric's z-score is sign-flipped."""
    out, _ = build(tmp_path, [train_record(a, "forecasting", "noncausal_self", seed=s) for a in ("softmax", "linear") for s in (0, 1)])
    table = table_of(out, "noncausal_self")
    info = table["tasks"]["forecasting"]
    assert info["primary_metric"] == "mse" and info["metric_info"]["mse"]["higher_is_better"] is False
    assert lbd.zscore(0.3, 0.5, 0.1, higher_is_better=False) == pytest.approx(2.0)
    assert lbd.zscore(0.3, 0.5, 0.1, higher_is_better=True) == pytest.approx(-2.0)


# ------------------------------------------------------------------------------------------------
# efficiency


def test_efficiency_groups_and_lengths(tmp_path):
    recs = [efficiency_record(a, "causal_self") for a in ("softmax", "linear", "based")]
    recs.append(efficiency_record("linear", "causal_self", hardware="NVIDIA H100 80GB HBM3"))
    eff = lbd.build_efficiency(recs)
    assert len(eff["groups"]) == 2
    cpu = next(g for g in eff["groups"] if g["hardware"] == "cpu-2c")
    lines = {line["attention"]: line for line in cpu["patterns"]["causal_self"]}
    assert [p["status"] for p in lines["softmax"]["points"]][-1] == "oom"
    assert lines["softmax"]["time_exponent"] == 2.0
    if eff["available"]:
        el = lines["linear"]["efficiency_lengths"]["softmax"]
        assert set(el) == {"time", "memory"} and {"cab_fit", "crossing"} <= set(el["time"])
        for entry in el.values():  # no measured crossing: the reader is told which side the curves are on
            assert (entry["crossing"] is None) == ("crossing_note" in entry)
        assert el["time"]["cab_fit"] is None or el["time"]["cab_fit"] > 0
        assert lines["softmax"]["efficiency_lengths"] == {}  # a baseline has no length against itself


def test_no_crossing_side():
    def pts(values):
        return [{"length": n, "status": "ok", "time_median_s": v} for n, v in zip((256, 512, 1024), values)]

    base = pts([1.0, 4.0, 16.0])
    assert lbd._no_crossing(pts([0.5, 1.0, 2.0]), base, "time_median_s") == {"side": "below", "length": 256}
    assert lbd._no_crossing(pts([2.0, 8.0, 32.0]), base, "time_median_s") == {"side": "above", "length": 1024}
    assert lbd._no_crossing(pts([2.0, 3.0, 4.0]), base, "time_median_s") is None  # it does cross


def test_efficiency_without_lengths_function(monkeypatch):
    monkeypatch.setattr(lbd, "_efficiency_lengths_fn", lambda: None)
    eff = lbd.build_efficiency([efficiency_record(a, "causal_self") for a in ("softmax", "linear")])
    assert eff["available"] is False
    assert all(line["efficiency_lengths"] == {} for g in eff["groups"] for ls in g["patterns"].values() for line in ls)


def test_run_shard_hash_is_stable():
    # the site's JavaScript computes the same FNV-1a (tests/test_leaderboard_browser.py opens runs by it)
    assert lbd.fnv1a("") == 0x811C9DC5
    assert lbd.fnv1a("a") == 0xE40C292C
    assert lbd.run_shard("af161951461664d6") == f"{lbd.fnv1a('af161951461664d6') % 256:02x}"


def test_markdown_table_matches_the_sites_cells(tmp_path, capsys):
    records = [train_record("softmax", "mqar", "causal_self", seed=s, metrics={"accuracy": a, "loss": 1.0})
               for s, a in ((0, 0.5), (1, 0.7))]
    records.append(train_record("oom_att", "mqar", "causal_self", status="oom"))
    results = tmp_path / "results"
    write_records(records, results)
    text = leaderboard_markdown.markdown_tables(results, normalisation=tmp_path / "none.json", warn=None)
    assert "### causal_self · scale cpu · cpu-2c" in text
    assert "| softmax | 0.600 ± 0.141 (2) |" in text  # sample standard deviation over the two seeds
    assert "| oom_att | oom |" in text
    assert leaderboard_cli.main(["table", "--results", str(results), "--pattern", "sideways"]) == 2
    assert "choose one of: noncausal_self, causal_self" in capsys.readouterr().err
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n<!-- tables:start -->\nstale\n<!-- tables:end -->\n\nprose after\n")
    no_norm = ["--normalisation", str(tmp_path / "none.json")]
    assert leaderboard_cli.main(["table", "--results", str(results), "--into", str(doc), *no_norm]) == 0
    written = doc.read_text()
    assert "stale" not in written and "| oom_att | oom |" in written and written.endswith("prose after\n")
    assert f"<!-- tables:start: cab leaderboard table --results {results} -->" in written
    doc.write_text("no markers\n")
    assert leaderboard_cli.main(["table", "--results", str(results), "--into", str(doc), *no_norm]) == 2
    assert "has no '<!-- tables:start -->'" in capsys.readouterr().err


def test_one_markdown_writer_pads_escapes_and_refuses_extra_cells():
    """The writer behind both `cab leaderboard table` and `cab bench table`."""
    lines = leaderboard_markdown.markdown_table(["a", "b", "c"], [["x"], ["p|q", "two\nlines", 3]])
    assert lines == ["| a | b | c |", "|---|---|---|", "| x |  |  |", "| p\\|q | two lines | 3 |"]
    with pytest.raises(ValueError, match="4 cells in a table of 3 columns"):
        leaderboard_markdown.markdown_table(["a", "b", "c"], [[1, 2, 3, 4]])


def test_a_pipe_in_a_record_does_not_shift_the_markdown_columns(tmp_path):
    """Variant labels come from records (untrusted): a `|` in one is a character, not a new column."""
    records = [train_record("linear", "mqar", "causal_self", hparams={"feature_map": fm}) for fm in ("elu", "a|b")]
    write_records(records, tmp_path / "results")
    text = leaderboard_markdown.markdown_tables(tmp_path / "results", normalisation=tmp_path / "none.json", warn=None)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert '| linear [feature_map="a\\|b"] |' in text
    assert {len(re.findall(r"(?<!\\)\|", row)) for row in rows} == {3}  # attention, mqar: two columns


def test_unsupported_records_fill_every_variant_column(tmp_path):
    ok = train_record("softmax", "gcog", "noncausal_self")
    ok["task_variant"] = "distractor"
    unsupported = train_record("self_less", "gcog", "noncausal_self", status="unsupported")
    assert not unsupported.get("task_variant")  # the task is never built for an unsupported cell
    out, _ = build(tmp_path, [ok, unsupported])
    table = table_of(out, "noncausal_self")
    assert list(table["tasks"]) == ["gcog/distractor"]
    cells = {c["row"].split("\x00")[0]: c for c in table["cells"]}
    assert cells["self_less"]["task"] == "gcog/distractor" and cells["self_less"]["status"] == "unsupported"


# ------------------------------------------------------------------------------------------------
# reference gates: is each column learnt? (cab/gates.py; the verdict logic itself: tests/test_gates.py)


def _gated_records():
    """causal self, three tasks, softmax and linear over three seeds. With the fixture's gates (the
    records state them): mqar learnt (softmax ≥ 0.55 on every seed), lm not learnt (softmax's
    perplexity misses 110 on seed 2); seq2seq states no gate and its records no bpc: no verdict."""
    records = []
    for seed in range(3):
        records += [
            train_record("softmax", "mqar", "causal_self", seed=seed, metrics={"accuracy": 0.9 + 0.02 * seed, "loss": 0.3}),
            train_record("linear", "mqar", "causal_self", seed=seed, metrics={"accuracy": 0.4 + 0.01 * seed, "loss": 1.3}),
            train_record("softmax", "lm", "causal_self", seed=seed, metrics={"perplexity": (30.0, 32.0, 150.0)[seed]}),
            train_record("linear", "lm", "causal_self", seed=seed, metrics={"perplexity": 60.0 + seed}),
            train_record("softmax", "seq2seq", "causal_self", seed=seed, metrics={"bleu": 20.0 + seed, "chrf": 40.0}),
            train_record("linear", "seq2seq", "causal_self", seed=seed, metrics={"bleu": 10.0 + seed, "chrf": 30.0}),
        ]
    return records


def test_each_column_states_whether_it_is_learnt(tmp_path):
    out, _ = build(tmp_path, _gated_records())
    tasks = table_of(out, "causal_self")["tasks"]
    mqar, lm, s2s = tasks["mqar"]["gate"], tasks["lm"]["gate"], tasks["seq2seq"]["gate"]
    assert mqar["status"] == "learnt" and mqar["source"] == "record" and mqar["n"] == 3
    assert mqar["reason"] == ("softmax accuracy 0.920 ± 0.020 over 3 seeds; needs ≥ 0.550 on every seed "
                              "(guess a context value 0.250 + 0.300): all pass")
    assert lm["status"] == "not_learnt" and "2 of 3 pass; fails on seed 2: 150.000" in lm["reason"]
    assert [s["passed"] for s in lm["seeds"]] == [True, True, False]
    assert s2s["status"] == "unknown" and "do not report bpc" in s2s["reason"]  # the built-in seq2seq gate


def test_the_aggregate_leaves_out_columns_that_are_not_learnt(tmp_path):
    records = _gated_records()
    results = write_records(records, tmp_path / "results")
    norm_path = tmp_path / "normalisation-v1.json"
    leaderboard.build(results, tmp_path / "site", normalisation=norm_path, freeze=True, warn=lambda m: None)
    norm = json.loads(norm_path.read_text())
    assert set(norm["constants"]["cpu"]["causal_self"]) == {"mqar", "lm", "seq2seq"}  # frozen as before
    table = table_of(tmp_path / "site", "causal_self")
    agg = table["aggregate"]
    assert agg["tasks"] == ["mqar", "seq2seq"] and list(agg["excluded"]) == ["lm"]
    assert agg["excluded"]["lm"] == table["tasks"]["lm"]["gate"]["reason"]
    cells = {(c["row"].split("\x00")[0], c["task"]): c for c in table["cells"]}
    consts = norm["constants"]["cpu"]["causal_self"]
    for row in table["rows"]:
        scores = agg["rows"][row["id"]]
        assert set(scores["task_scores"]) == {"mqar", "seq2seq"} and scores["complete"]
        expected = []
        for task in ("mqar", "seq2seq"):
            zs = [lbd.zscore(cells[(row["attention"], task)]["metrics"][m][0], c["mean"], c["std"], c["higher_is_better"])
                  for m, c in consts[task].items()]
            expected.append(sum(zs) / len(zs))
        assert scores["score"] == pytest.approx(sum(expected) / 2)
    # the unit: a known table whose second task is not learnt scores on the first alone
    known = _known_table()
    known["tasks"]["t2"]["gate"] = {"status": "not_learnt", "reason": "softmax missed it"}
    consts = {"version": 1, "constants": {"cpu": {"causal_self": {
        "t1": {"acc": {"mean": 0.7, "std": 0.2, "higher_is_better": True}},
        "t2": {"acc": {"mean": 0.5, "std": 0.05, "higher_is_better": True}}}}}}
    agg = lbd.aggregate_table(known, consts)
    assert agg["tasks"] == ["t1"] and agg["excluded"] == {"t2": "softmax missed it"}
    assert agg["rows"]["A"]["score"] == pytest.approx(1.0) and agg["rows"]["A"]["task_scores"] == {"t1": pytest.approx(1.0)}
    assert agg["rows"]["B"]["complete"]  # B failed t2, which no longer counts


def test_records_without_a_gate_are_judged_by_the_tasks_built_in_gate(tmp_path):
    """Records written before the `gate` field (the published v1 records) get the built-in gate of
    their task (cab.gates.GATES); a record's own gate, where it states one, takes precedence."""
    def mqar(values, gate=True):
        recs = [train_record("softmax", "mqar", "causal_self", seed=s, metrics={"accuracy": v, "loss": 1.0}) for s, v in enumerate(values)]
        for r in recs:
            r["reference_metrics"] = {"accuracy_guess_a_context_value": 0.125}
            if not gate:
                del r["gate"]
        return recs

    for values, gate, status, source in (([0.95, 0.97], False, "learnt", "cab.gates"),
                                         ([0.95, 0.85], False, "not_learnt", "cab.gates"),   # built-in floor 0.90
                                         ([0.95, 0.85], True, "learnt", "record")):         # the record's own bar: 0.55
        out, _ = build(tmp_path / f"{status}-{source}", mqar(values, gate))
        verdict = table_of(out, "causal_self")["tasks"]["mqar"]["gate"]
        assert (verdict["status"], verdict["source"]) == (status, source), verdict
    # no softmax in the column: no verdict, and the column stays in the aggregate
    out, _ = build(tmp_path / "none", [train_record("linear", "mqar", "causal_self")])
    verdict = table_of(out, "causal_self")["tasks"]["mqar"]["gate"]
    assert verdict["status"] == "unknown" and "no softmax records" in verdict["reason"]
    # a gate that is not one is reported, not replaced by a guess
    bad = mqar([0.95])
    bad[0]["gate"] = {"metric": "accuracy", "higher_is_better": "<script>"}
    out, _ = build(tmp_path / "bad", bad)
    verdict = table_of(out, "causal_self")["tasks"]["mqar"]["gate"]
    assert verdict["status"] == "unknown" and "malformed" in verdict["reason"]


def test_markdown_marks_columns_that_are_not_learnt(tmp_path):
    results = write_records(_gated_records(), tmp_path / "results")
    text = leaderboard_markdown.markdown_tables(results, normalisation=tmp_path / "none.json", warn=None)
    header = next(line for line in text.splitlines() if line.startswith("| attention"))
    assert header == "| attention | lm: perplexity ↓ † | mqar: accuracy ↑ | seq2seq: bleu ↑ ‡ |"
    assert "- lm †: not learnt: softmax perplexity 70.667 ± 68.712 over 3 seeds; needs ≤ 110.000 on every seed" in text
    assert "- mqar: learnt: softmax accuracy 0.920" in text
    assert "- seq2seq ‡: no verdict: softmax's records do not report bpc" in text
    norm = tmp_path / "normalisation-v1.json"
    leaderboard.build(results, tmp_path / "site", normalisation=norm, freeze=True, warn=lambda m: None)
    text = leaderboard_markdown.markdown_tables(results, normalisation=norm, warn=None)
    assert "Aggregate: mean z-score over the learnt tasks with frozen constants (* = not all of them), leaving out the columns not learnt (†)." in text


def test_published_records_are_judged_and_unlearnt_columns_left_out():
    """The published records state the gate they were judged by, and it is the task's gate in
    cab.gates (the code that made them); every column gets a verdict over softmax's three seeds, and
    each aggregate uses exactly the learnt columns that the default (frozen) normalisation covers."""
    from cab.gates import GATES, Gate

    records, _ = lbd.load_records(PUBLISHED / "cpu" / "train", warn=None)
    for r in records:
        if r["status"] == "ok":  # a job that stopped before its task was built has no gate to state
            assert Gate.from_dict(r["gate"]) == GATES[r["task"].split("/", 1)[0]], r["run_id"]
    norm = leaderboard.read_normalisation(leaderboard.default_normalisation_path())
    tables = lbd.build_tables(records, norm)
    columns = [(t["pattern"], task, info["gate"]) for t in tables for task, info in t["tasks"].items()]
    assert len(columns) == 15
    for pattern, task, gate in columns:
        assert gate["status"] in ("learnt", "not_learnt") and gate["source"] == "record", (pattern, task, gate)
        assert gate["n"] == 3 and gate["reason"].startswith("softmax "), (pattern, task, gate)
    for t in tables:
        consts = lbd.normalisation_for(norm, t["scale"], t["pattern"])
        learnt = sorted(task for task, info in t["tasks"].items() if info["gate"]["status"] == "learnt" and task in consts)
        assert t["aggregate"]["tasks"] == learnt


def test_published_records_are_valid_and_explain_every_failure():
    """leaderboard/results holds the published records: all load, every non-ok cell says why, and
    the efficiency grid covers every registered attention on both self patterns."""
    from cab.registry import list_attentions

    results = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
    records, skipped = lbd.load_records(results)
    assert records and skipped == []
    for r in records:
        if r["status"] == "unsupported":
            assert r.get("reason"), r["run_id"]
        elif r["status"] != "ok":
            assert (r.get("error") or {}).get("message"), r["run_id"]
    measured = {(r["attention"], r["pattern"]) for r in records if r.get("kind") == "efficiency"}
    for name in list_attentions():
        assert {(name, "causal_self"), (name, "noncausal_self")} <= measured, name


PUBLISHED = Path(__file__).resolve().parents[1] / "leaderboard" / "results"
RESULTS_DOC = Path(__file__).resolve().parents[1] / "docs" / "results.md"


def test_published_grid_covers_every_attention_on_every_pattern():
    """The CPU grid trains every registered attention on every pattern it claims, and records the
    stated reason on every pattern it does not: nothing registered is missing from the board."""
    from cab.patterns import ALL_PATTERNS
    from cab.registry import attention_spec, list_attentions

    records, _ = lbd.load_records(PUBLISHED / "cpu" / "train", warn=None)
    seen = {(r["attention"], r["pattern"], r["status"] == "unsupported") for r in records}
    for name in list_attentions():
        spec = attention_spec(name)
        for pattern in ALL_PATTERNS:
            claimed = pattern in spec.patterns
            assert (name, pattern.value, not claimed) in seen, (name, pattern.value)


def test_results_doc_tables_are_the_committed_records():
    """docs/results.md quotes `cab leaderboard table` on the committed records; a rerun of the grid
    that changes a number must change the page too."""
    text = RESULTS_DOC.read_text()
    m = re.search(r"<!-- tables:start: cab leaderboard table --results (\S+) -->\n(.*?)<!-- tables:end -->",
                  text, re.S)
    assert m, "docs/results.md has no tables:start/tables:end block"
    printed = leaderboard_markdown.markdown_tables(Path(__file__).resolve().parents[1] / m.group(1), warn=None)
    assert m.group(2).strip() == printed.strip()


def test_crash_markers_and_hydra_logs_are_not_records(tmp_path):
    results = tmp_path / "results"
    write_records([train_record("softmax", "mqar", "causal_self")], results)
    for hidden in (".running", ".hydra/multirun/0"):
        (results / hidden).mkdir(parents=True)
        (results / hidden / "abc.json").write_text('{"pid": 1, "record": {}}')
    records, skipped = lbd.load_records(results)
    assert len(records) == 1 and skipped == []


# ------------------------------------------------------------------------------------------------
# mechanism pages: what each attention is (the registry) and how it did (the tables)


def _registered():
    from cab.registry import list_attentions

    return list_attentions()


@pytest.mark.parametrize("name", _registered())
def test_every_registered_attention_has_page_metadata(name):
    """Family, paper and patterns come from the registry, so a new attention is on the site the moment
    it registers; a paper link is an https address or left empty (never a guess)."""
    from cab.leaderboard import mechanisms
    from cab.registry import FAMILIES, attention_spec

    meta = mechanisms.registry_metadata([name])[name]
    spec = attention_spec(name)
    assert meta["registered"] and meta["module"] == spec.module and not meta["plugin"]
    assert meta["family"] in FAMILIES and meta["family_text"] == FAMILIES[meta["family"]]
    url = meta["paper"]["url"]
    assert meta["paper"]["title"] and (url == "" or url.startswith("https://")), meta["paper"]
    assert meta["citation"] and meta["summary"]  # the docstring's first line, and a paragraph of what it is
    for pattern in ("noncausal_self", "causal_self", "noncausal_cross", "causal_cross"):
        supported = any(p.value == pattern for p in spec.patterns)
        expected = True if supported else next(r for p, r in spec.unsupported.items() if p.value == pattern)
        assert meta["patterns"][pattern] == expected


def test_attention_metadata_is_checked_at_registration():
    from cab import Pattern, register_attention

    with pytest.raises(ValueError, match="unknown family 'kernelish'; valid families: exact, sparse, routed, linear"):
        register_attention("bad_family", patterns=set(Pattern), family="kernelish")
    with pytest.raises(ValueError, match="unknown paper key.*authorz; valid: title, authors, venue, year, url"):
        register_attention("bad_paper", patterns=set(Pattern), paper={"title": "T", "authorz": "me"})
    with pytest.raises(ValueError, match="paper url must be an https:// address or empty"):
        register_attention("bad_url", patterns=set(Pattern), paper={"title": "T", "url": "http://example.org"})
    with pytest.raises(ValueError, match="non-empty 'title'"):
        register_attention("no_title", patterns=set(Pattern), paper={"year": 2020})


def test_split_docstring_takes_the_paper_line_and_a_prose_paragraph():
    from cab.leaderboard.mechanisms import split_docstring

    doc = 'Foo attention, "A paper" (Someone et al., 2030).\n\n    y = f(x)\n\nOps: one call.\n\nEach query reads a summary.\nOf the keys.\n'
    assert split_docstring(doc) == ('Foo attention, "A paper" (Someone et al., 2030).', "Each query reads a summary. Of the keys.")
    assert split_docstring("Only a line.") == ("Only a line.", "Only a line.")
    assert split_docstring("") == ("", "")


@pytest.fixture
def plugin_attention():
    """A plugin registered outside cab.attentions, without paper or family: its page falls back to its docstring."""
    from cab import MultiHeadAttention, Pattern, register_attention, registry

    @register_attention("plugin_doc_only", patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
                        unsupported={Pattern.NONCAUSAL_CROSS: "no source sequence in my model", Pattern.CAUSAL_CROSS: "same reason"})
    class PluginDocOnly(MultiHeadAttention):
        """Plugin attention: queries read a running mean of the keys.

        Each query reads the mean of the values so far.
        """

        __module__ = "my_lab.attention"  # as if installed from a third-party package

    yield "plugin_doc_only"
    registry._ATTENTIONS.entries.pop("plugin_doc_only")


def test_plugin_and_unregistered_attentions_get_pages(tmp_path, plugin_attention):
    records = [train_record(plugin_attention, "mqar", "causal_self", seed=s) for s in (0, 1)]
    records += [train_record("softmax", "mqar", "causal_self", seed=s) for s in (0, 1)]
    records.append(train_record("someone_elses", "mqar", "causal_self"))  # a name this build has not registered
    unsupported = train_record("someone_elses", "mqar", "causal_cross", status="unsupported")
    records.append(unsupported)
    out, summary = build(tmp_path, records)
    assert summary["mechanisms"] == 3
    _, index = read_js(out / "data" / "mechanisms.js")
    by_name = {m["name"]: m for m in index}
    plugin = read_js(out / "data" / "mech" / f"{by_name[plugin_attention]['file']}.js")[1]
    assert plugin["registered"] and plugin["plugin"] and plugin["module"] == "my_lab.attention"
    assert plugin["paper"] is None and plugin["family"] is None
    assert plugin["citation"] == "Plugin attention: queries read a running mean of the keys."
    assert plugin["summary"] == "Each query reads the mean of the values so far."
    assert plugin["patterns"]["noncausal_cross"] == "no source sequence in my model" and plugin["patterns"]["causal_self"] is True
    (column,) = [g for g in plugin["accuracy"] if g["scale"] == "cpu"]
    mqar = column["patterns"]["causal_self"]["mqar"]
    assert mqar["reference"]["attention"] == "softmax" and mqar["of"] == 3 and mqar["rank"] in (1, 2, 3)
    assert mqar["baselines"] == {"guess a context value": 0.25} and mqar["rows"][0]["value"][2] == 2
    other = read_js(out / "data" / "mech" / f"{by_name['someone_elses']['file']}.js")[1]
    assert not other["registered"] and other["patterns"]["causal_cross"] == unsupported["reason"]
    assert other["patterns"]["causal_self"] is True and other["patterns"]["noncausal_self"] is None
    assert by_name["softmax"]["paper"]["title"] == "Attention Is All You Need"


def test_mechanism_file_names_are_safe(tmp_path):
    from cab.leaderboard.mechanisms import file_id

    assert file_id("linear") == "linear" and re.fullmatch(r"x[0-9a-f]{16}", file_id("../<evil>"))
    out, _ = build(tmp_path, [train_record("../<evil>", "mqar", "causal_self")])
    assert [p.name for p in (out / "data" / "mech").iterdir()] == [file_id("../<evil>") + ".js"]


# ------------------------------------------------------------------------------------------------
# the Zoology view, the full data set, dirty trees, efficiency directions


def test_zoology_view_picks_the_best_learning_rate_per_point():
    from cab.leaderboard.zoology import build_zoology
    from leaderboard_fixture import zoology_records

    records = zoology_records(attentions=("softmax", "linear", "sliding_window"), cells=((64, 4), (256, 16)), widths=(32, 64))
    (group,) = build_zoology(records)
    assert (group["scale"], group["pattern"]) == ("cpu", "causal_self")
    assert [(f["seq_len"], f["num_kv_pairs"]) for f in group["facets"]] == [(64, 4), (256, 16)]
    facet = group["facets"][0]
    assert facet["chance"] == pytest.approx(0.25) and facet["no_state"] == ["sliding_window"]
    lines = {line["attention"]: line for line in facet["lines"]}
    assert set(lines) == {"softmax", "linear"}
    point = next(p for p in lines["linear"]["points"] if p["d_model"] == 64)
    assert point["state_size"] == 2 * (64 * 64 + 64) and point["chosen_from"] == 2 and point["differing"] == ["trainer.lr"]
    by_lr = {}
    for r in records:
        cfg = r["config"]
        if (r["attention"], cfg["task"]["seq_len"], cfg["task"]["d_model"]) == ("linear", 64, 64):
            by_lr.setdefault(cfg["trainer"]["lr"], []).append(r["metrics"]["accuracy"])
    best = max(by_lr.values(), key=lambda v: sum(v) / len(v))
    assert point["mean"] == pytest.approx(sum(best) / len(best)) and point["n"] == len(best) == 2
    assert [p["state_size"] for p in lines["linear"]["points"]] == sorted(p["state_size"] for p in lines["linear"]["points"])


def test_full_data_set_downloads(tmp_path):
    records = demo_records(seeds=2)
    variant = train_record("softmax", "gcog", "noncausal_self")
    variant["task_variant"] = "distractor"
    records.append(variant)
    records[0]["command"] = "cab run <script>alert(1)</script>"
    out, _ = build(tmp_path, records)
    lines = (out / "data" / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(records)
    assert "<" not in "".join(lines) and ">" not in "".join(lines)
    parsed = {r["run_id"]: r for r in map(json.loads, lines)}
    for r in records:
        assert parsed[r["run_id"]] == json.loads(json.dumps(r))  # as written: the variant's task name too
    with open(out / "data" / "runs.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == [h.strip() for h in header] and len(set(header)) == len(header)
    for column in ("run_id", "seed", "metrics.accuracy", "metrics.mse", "cost.flops_per_example", "config.task.seq_len",
                   "env.git_dirty", "command"):
        assert column in header, column
    train = [r for r in records if r["kind"] == "train"]
    assert len(body) == len(train) and {row[header.index("run_id")] for row in body} == {r["run_id"] for r in train}
    one = next(row for row in body if row[header.index("run_id")] == records[0]["run_id"])
    assert float(one[header.index("metrics.accuracy")]) == records[0]["metrics"]["accuracy"]
    with open(out / "data" / "efficiency.csv", newline="") as f:
        eff_rows = list(csv.DictReader(f))
    assert len(eff_rows) == sum(len(r["efficiency"]["points"]) for r in records if r["kind"] == "efficiency")
    assert {"efficiency.direction", "efficiency.points.length", "efficiency.points.time_median_s"} <= set(eff_rows[0])
    _, index = read_js(out / "data" / "index.js")
    assert [d["file"] for d in index["downloads"]] == ["records.jsonl", "runs.csv", "efficiency.csv"]


def test_runs_from_a_dirty_tree_are_counted_where_their_numbers_appear(tmp_path):
    records = [train_record("softmax", "mqar", "causal_self", seed=0, dirty=True), train_record("softmax", "mqar", "causal_self", seed=1)]
    out, _ = build(tmp_path, records)
    (cell,) = table_of(out, "causal_self")["cells"]
    assert cell["dirty"] == 1 and sorted(run[3] for run in cell["runs"]) == [0, 1]
    _, index = read_js(out / "data" / "index.js")
    assert index["dirty_runs"] == 1


def test_efficiency_groups_follow_direction_and_distributed_settings():
    recs = [efficiency_record(a, "causal_self") for a in ("softmax", "linear")]
    recs += [efficiency_record(a, "causal_self", direction="decode") for a in ("softmax", "linear")]
    ring = [efficiency_record(a, "causal_self", extra={"world_size": 4, "strategy": "ring"}) for a in ("softmax", "linear")]
    top_level = efficiency_record("linear", "causal_self", extra={"world_size": 2})
    top_level["strategy"] = "all_to_all"  # a distributed field stated on the record itself
    eff = lbd.build_efficiency(recs + ring + [top_level])
    settings = [g["settings"] for g in eff["groups"]]
    assert len(settings) == 4
    assert {s["direction"] for s in settings} == {"forward", "decode"}
    assert {(s.get("world_size"), s.get("strategy")) for s in settings} == {(None, None), (4, "ring"), (2, "all_to_all")}
    decode = next(g for g in eff["groups"] if g["settings"]["direction"] == "decode")
    line = next(x for x in decode["patterns"]["causal_self"] if x["attention"] == "linear")
    if eff["available"]:  # CAB's quadratic fit is for forward passes; decode keeps the measured crossing
        assert all(v["cab_fit"] is None for v in line["efficiency_lengths"]["softmax"].values())
