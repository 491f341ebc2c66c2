"""How the leaderboard scales: build time for 10,000 records and overview load time in a browser.

    python benchmarks/leaderboard_scale.py [--records 10000] [--out benchmarks/results/leaderboard_scale.md]

The records are synthetic (tests/leaderboard_fixture.py: every status, several tasks, seeds, scales and
machines, plus efficiency records); writing them is not timed. Timed:
- `leaderboard.build` in this process (load + validate, aggregate, write the data files);
- `cab leaderboard build` as a user runs it (a fresh interpreter, including the efficiency-length fits);
- the overview page opened from file:// in headless Chromium, from navigation to the table drawn
  (median of fresh browser contexts), when chromium and playwright are installed.
Targets (the issue): build under 10 s, overview under 2 s.
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

from cab.leaderboard import site as leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic records are a test fixture
from leaderboard_fixture import demo_records, write_records  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def synthetic(n: int) -> list[dict]:
    """At least `n` records: the demo grid over three scales, two machines and enough seeds; the
    efficiency records kept, training records cut to make exactly `n`."""
    per_seed = sum(r["kind"] == "train" for r in demo_records(seeds=1))
    seeds = max(1, -(-n // (per_seed * 6)))
    records = demo_records(seeds=seeds, scales=("smoke", "cpu", "paper"), hardware=("cpu-2c", "NVIDIA H100 80GB HBM3"))
    eff = [r for r in records if r["kind"] == "efficiency"]
    train = [r for r in records if r["kind"] == "train"]
    random.Random(0).shuffle(train)
    return eff + train[: n - len(eff)]


def cli_build(results: Path, out: Path, norm: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cab.cli", "leaderboard", "build", "--results", str(results),
                           "--out", str(out), "--normalisation", str(norm), "-q"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - start


def browser_load_times(site: Path, repeats: int = 3) -> list[float] | str:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: the playwright package is not installed"
    if not chromium:
        return "skipped: chromium is not installed"
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        for _ in range(repeats):
            context = browser.new_context()
            page = context.new_page()
            start = time.perf_counter()
            page.goto(f"file://{site}/index.html")
            page.wait_for_selector("#rows tr")
            times.append(time.perf_counter() - start)
            context.close()
        browser.close()
    return times


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
        loads = browser_load_times(tmp / "site")
        data = tmp / "site" / "data"
        sizes = {p.name: p.stat().st_size for p in data.glob("*.js")}
        run_sizes = [p.stat().st_size for p in (data / "runs").glob("*.js")]
        total = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())

    n_train = sum(r["kind"] == "train" for r in records)
    lines = [
        "# Leaderboard at scale",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/leaderboard_scale.py --records {args.records}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (shared with other work; load average "
        f"{os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}.",
        "",
        f"Records: {len(records)} synthetic ({n_train} training over 3 scales x 2 machines, {len(records) - n_train} efficiency), "
        f"{summary['tables']} tables, {summary['efficiency_groups']} efficiency groups, {summary['run_files']} run files.",
        "",
        "| what | measured | target |",
        "|---|---:|---:|",
        f"| build in process (load + validate / aggregate / write) | {summary['seconds']['total']:.2f} s "
        f"({summary['seconds']['load']:.2f} / {summary['seconds']['compute']:.2f} / {summary['seconds']['write']:.2f}) | < 10 s |",
        f"| `cab leaderboard build` (fresh interpreter, with the efficiency fits) | {cli_seconds:.2f} s | < 10 s |",
        f"| `cab leaderboard build`, the {n_train} training records only (no fits) | {cli_train_seconds:.2f} s | < 10 s |",
        f"| for comparison: `python -c 'import cab.bench.measure'` (imports torch) | {torch_seconds:.2f} s | |",
    ]
    if isinstance(loads, list):
        lines.append(f"| overview from file:// to table drawn, headless Chromium (median of {len(loads)}; all: "
                     f"{', '.join(f'{t:.2f}' for t in loads)} s) | {statistics.median(loads):.2f} s | < 2 s |")
    else:
        lines.append(f"| overview load in a browser | {loads} | < 2 s |")
    lines += [
        "",
        "With efficiency records, a fresh `cab leaderboard build` also fits their efficiency lengths "
        "(`cab.bench.scaling.efficiency_lengths`, numpy, no torch); the build itself is the row above it. "
        "The leaderboard never imports torch.",
    ]
    largest_table = max((v for k, v in sizes.items() if k.startswith("table-")), default=0)
    lines += [
        "",
        f"Data written: {total / 1e6:.1f} MB in all; the overview reads `index.js` ({sizes.get('index.js', 0) / 1e3:.1f} kB) and one "
        f"table file (largest {largest_table / 1e3:.1f} kB); a run page reads one of {len(run_sizes)} run files "
        f"(median {statistics.median(run_sizes) / 1e3:.0f} kB).",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
