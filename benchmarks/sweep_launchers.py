"""Wall time of the same 16-job smoke grid under the basic launcher (sequential) and joblib (2 workers).

    python benchmarks/sweep_launchers.py --out benchmarks/results/sweep_launchers.md

The grid: 4 attentions × 2 patterns × 2 seeds of MQAR at smoke scale, each in a fresh results
directory (nothing skipped). Also times the README's main job (`experiment=quickstart`) unless
--no-quickstart.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = ["-m", "attention=softmax,linear,local,performer", "pattern=causal_self,noncausal_self", "seed=0,1",
        "task=mqar", "trainer=smoke"]


def timed(args: list[str], cwd: str) -> tuple[float, int, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cab.cli", "run", *args], cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - start, out.returncode, out.stderr[-500:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--no-quickstart", action="store_true")
    args = parser.parse_args()
    rows = []
    for label, extra in [("basic (sequential, all threads)", []), ("joblib, 2 workers × 1 thread", ["launcher=joblib"])]:
        with tempfile.TemporaryDirectory() as tmp:
            seconds, code, err = timed([*GRID, *extra, f"results_dir={tmp}/results"], tmp)
            jobs = len(list(Path(tmp, "results").glob("*.json")))
        rows.append(f"| 16-job smoke grid, {label} | {seconds:.1f} s | {jobs} records, exit {code} |")
        print(rows[-1], err if code else "", flush=True)
    if not args.no_quickstart:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.environ.get("CAB_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
            os.environ["CAB_DATA_DIR"] = data
            seconds, code, err = timed(["-m", "experiment=quickstart", f"results_dir={tmp}/results", f"leaderboard_out={tmp}/site"], tmp)
            jobs = len(list(Path(tmp, "results").glob("*.json")))
            built = Path(tmp, "site", "index.html").exists()
        rows.append(f"| `cab run -m experiment=quickstart` (README main job) | {seconds:.1f} s | {jobs} records, site built: {built}, exit {code} |")
        print(rows[-1], err if code else "", flush=True)
    lines = ["# Sweep wall times", "", f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
             f"`python {' '.join(sys.argv)}`", "", "| run | wall time | outcome |", "|---|---|---|", *rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
