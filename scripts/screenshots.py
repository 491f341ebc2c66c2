"""Build a demo leaderboard and write PNG screenshots of its pages, to check the design by eye.

    python scripts/screenshots.py [--results DIR] [--out DIR]

Without --results the site is built from synthetic records (tests/leaderboard_fixture.py; made-up
numbers, clearly not results). Needs Debian's chromium and the playwright package
(.ci/install-browser); pages are opened from file:// exactly as a reader would.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cab.leaderboard import site as leaderboard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the synthetic records are a test fixture
from leaderboard_fixture import demo_records, write_records  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = [  # (file name, page, selector to wait for, full page)
    ("overview.png", "index.html", "#rows tr", True),
    ("overview-task.png", "index.html#pattern=noncausal_self&task=forecasting", "#rows tr", False),
    ("overview-cross.png", "index.html#pattern=causal_cross", "#rows tr", False),
    ("efficiency.png", "efficiency.html", "section.pattern svg", True),
    ("cost.png", "cost.html#pattern=noncausal_self", ".task-plot svg", True),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="a results directory (default: synthetic demo records)")
    parser.add_argument("--out", default="/tmp/cab-screenshots", help="where the site and PNGs go (default: /tmp/cab-screenshots)")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("screenshots need the playwright package: run .ci/install-browser")
    if not chromium:
        sys.exit("screenshots need Debian's chromium: run .ci/install-browser")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results) if args.results else write_records(demo_records(seeds=3), out / "demo-results")
    norm = out / "normalisation-demo.json"
    norm.unlink(missing_ok=True)
    leaderboard.build(results, out / "site", normalisation=norm, freeze=not args.results, warn=lambda m: None)
    site = (out / "site").resolve()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        for name, path, selector, full in SHOTS:
            page.goto(f"file://{site}/{path}")
            page.wait_for_selector(selector)
            page.screenshot(path=str(out / name), full_page=full)
            print(out / name)
        page.goto(f"file://{site}/index.html#pattern=noncausal_self")
        page.wait_for_selector("#rows a.val")
        page.click("#rows a.val >> nth=0")
        page.wait_for_selector(".card pre.command")
        page.screenshot(path=str(out / "run.png"), full_page=False)
        print(out / "run.png")
        browser.close()
    if errors:
        print("console errors:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
