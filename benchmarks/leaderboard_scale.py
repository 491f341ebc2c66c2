"""How the leaderboard scales: build time for 10,000 records, and what each page loads in a browser.

    python benchmarks/leaderboard_scale.py [--records 10000] [--out benchmarks/results/leaderboard_scale.md]

The records are synthetic (tests/leaderboard_fixture.py: every status, several tasks, seeds, scales and
machines, a Zoology grid, plus efficiency records); writing them is not timed. Timed:
- `leaderboard.build` in this process (load + validate, aggregate, mechanism metadata from the
  registry, write the data files and the full data set);
- `cab leaderboard build` as a user runs it (a fresh interpreter: the registry's import of every
  attention module, torch included, and the efficiency-length fits);
- each page opened from file:// in headless Chromium, from navigation to drawn (median of fresh
  browser contexts), with the bytes it loads (every file it requests, summed from disk), when
  chromium and playwright are installed.
Targets (issue #19): build under 10 s, the overview under 300 KB (and drawn under 2 s).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cab.leaderboard import site as leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic records are a test fixture
from leaderboard_fixture import demo_records, write_records, zoology_records  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def synthetic(n: int) -> list[dict]:
    """At least `n` records: the demo grid over three scales, two machines and enough seeds; the
    efficiency records kept, training records cut to make exactly `n`."""
    per_seed = sum(r["kind"] == "train" for r in demo_records(seeds=1))
    seeds = max(1, -(-n // (per_seed * 6)))
    records = demo_records(seeds=seeds, scales=("smoke", "cpu", "paper"), hardware=("cpu-2c", "NVIDIA H100 80GB HBM3"))
    eff = [r for r in records if r["kind"] == "efficiency"]
    zoo = zoology_records(cells=((64, 4), (128, 8), (256, 16), (512, 64)), widths=(32, 64, 128), seeds=2)
    train = [r for r in records if r["kind"] == "train"]
    random.Random(0).shuffle(train)
    return eff + zoo + train[: n - len(eff) - len(zoo)]


def cli_build(results: Path, out: Path, norm: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cab.cli", "leaderboard", "build", "--results", str(results),
                           "--out", str(out), "--normalisation", str(norm), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - start


PAGES = [("overview", "index.html", "#rows tr"), ("mechanism", "mechanism.html#name=linear", "#patterns li"),
         ("compare", "compare.html#names=softmax,linear,based", "table.compare"), ("efficiency", "efficiency.html", "section.pattern svg"),
         ("cost", "cost.html", ".task-plot svg"), ("zoology", "zoology.html", "#zoology-body svg")]


def browser_loads(site: Path, repeats: int = 3) -> dict[str, tuple[list[float], int]] | str:
    """page -> (seconds from navigation to drawn, one per fresh context; bytes of every file it requested)."""
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: the playwright package is not installed"
    if not chromium:
        return "skipped: chromium is not installed"
    out: dict[str, tuple[list[float], int]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        for name, path, ready in PAGES:
            times, size = [], 0
            for _ in range(repeats):
                context = browser.new_context()
                page = context.new_page()
                urls: list[str] = []
                page.on("request", lambda r: urls.append(r.url))
                start = time.perf_counter()
                page.goto(f"file://{site}/{path}")
                page.wait_for_selector(ready)
                times.append(time.perf_counter() - start)
                files = {unquote(urlsplit(u).path) for u in urls if u.startswith("file://")}
                size = sum(Path(f).stat().st_size for f in files if Path(f).is_file())
                context.close()
            out[name] = (times, size)
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "leaderboard_scale.md"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        records = synthetic(args.records)
        write_records(records, tmp / "results")
        eff_names = {f"{r['run_id']}.json" for r in records if r["kind"] == "efficiency"}
        norm = tmp / "normalisation-v1.json"
        leaderboard.build(tmp / "results", tmp / "freeze-site", normalisation=norm, freeze=True, warn=lambda m: None)

        summary = leaderboard.build(tmp / "results", tmp / "site", normalisation=norm, warn=print)
        cli_seconds = cli_build(tmp / "results", tmp / "site-cli", norm)
        # the same without the efficiency records: no efficiency-length fits
        train_only = tmp / "train-only"
        shutil.copytree(tmp / "results", train_only, ignore=lambda d, names: [n for n in names if n in eff_names])
        cli_train_seconds = cli_build(train_only, tmp / "site-cli-2", norm)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import cab.bench.measure"], check=True)
        torch_seconds = time.perf_counter() - start
        loads = browser_loads(tmp / "site")
        data = tmp / "site" / "data"
        sizes = {p.name: p.stat().st_size for p in data.glob("*.js")}
        run_sizes = [p.stat().st_size for p in (data / "runs").glob("*.js")]
        total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        downloads = sum((data / f).stat().st_size for f in ("records.jsonl", "runs.csv", "efficiency.csv"))
        mech_sizes = [p.stat().st_size for p in (data / "mech").glob("*.js")]
        mech_files, mech_largest = len(mech_sizes), max(mech_sizes, default=0)

    n_train = sum(r["kind"] == "train" for r in records)
    lines = [
        "# Leaderboard at scale",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/leaderboard_scale.py --records {args.records}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared with other work; load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}.",
        "",
        f"Records: {len(records)} synthetic ({n_train} training over 3 scales x 2 machines, a Zoology grid among them; {len(records) - n_train} efficiency), "
        f"{summary['tables']} tables, {summary['efficiency_groups']} efficiency groups, {summary['run_files']} run files.",
        "",
        "| what | measured | target |",
        "|---|---:|---:|",
        f"| build in process (load + validate / aggregate / mechanism metadata / write) | {summary['seconds']['total']:.2f} s "
        f"({summary['seconds']['load']:.2f} / {summary['seconds']['compute']:.2f} / {summary['seconds']['metadata']:.2f} / "
        f"{summary['seconds']['write']:.2f}) | < 10 s |",
        f"| `cab leaderboard build` (fresh interpreter: registry import with torch, efficiency fits) | {cli_seconds:.2f} s | < 10 s |",
        f"| `cab leaderboard build`, the {n_train} training records only (no fits) | {cli_train_seconds:.2f} s | < 10 s |",
        f"| for comparison: `python -c 'import cab.bench.measure'` (imports torch) | {torch_seconds:.2f} s | |",
    ]
    if isinstance(loads, dict):
        for name, (times, size) in loads.items():
            target = "< 300 KB, < 2 s" if name == "overview" else ""
            lines.append(f"| {name} page from file:// to drawn, headless Chromium (median of {len(times)}; all: "
                         f"{', '.join(f'{t:.2f}' for t in times)} s), and the bytes it loads | {statistics.median(times):.2f} s, "
                         f"{size / 1e3:.0f} KB | {target} |")
    else:
        lines.append(f"| pages in a browser | {loads} | < 2 s |")
    lines += [
        "",
        "A fresh `cab leaderboard build` imports the attention registry (every attention module, and torch) for the "
        "mechanism pages' metadata, and fits the efficiency lengths (`cab.bench.scaling.efficiency_lengths`, numpy); "
        "the build in process is the first row (the registry already imported there).",
    ]
    largest_table = max((v for k, v in sizes.items() if k.startswith("table-")), default=0)
    lines += [
        "",
        f"Data written: {total / 1e6:.1f} MB in all, of which the full data set (records.jsonl, runs.csv, efficiency.csv) "
        f"{downloads / 1e6:.1f} MB; the overview reads `index.js` ({sizes.get('index.js', 0) / 1e3:.1f} kB) and one "
        f"table file (largest {largest_table / 1e3:.1f} kB); a mechanism page one of {mech_files} mechanism files (largest "
        f"{mech_largest / 1e3:.1f} kB); a run page one of {len(run_sizes)} run files (median {statistics.median(run_sizes) / 1e3:.0f} kB).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
