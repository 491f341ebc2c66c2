"""Screenshots of every page type of the leaderboard at 1,440 px and 390 px wide, from the published records.

    python scripts/screenshots.py                       # leaderboard/results/cpu -> docs/screenshots/*.png
    python scripts/screenshots.py --results DIR --out DIR
    python scripts/screenshots.py --demo --out /tmp/cab-demo   # synthetic records (made-up numbers), to check the design

The site is built into a temporary folder with the package's frozen normalisation and opened from
file:// in headless Chromium, as a reader opens site/index.html. Each page type (overview, mechanism
list, a mechanism page, compare, efficiency, accuracy versus cost, Zoology, a run page) is captured at
a desktop width (1,440 × 900) and a phone width (390 × 844, 2× pixels like a phone, shown at 1×
here to keep files small), from the top of the page down to at most `--max-height` CSS pixels. PNGs
are quantised to a 128-colour palette (Pillow) so the set stays small; a page that logs a console
error, requests the network or overflows its width at 390 px makes the script fail.
Needs Debian's chromium and the playwright package (.ci/install-browser).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from cab.leaderboard import site as leaderboard

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
WIDTHS = {"1440": (1440, 900), "390": (390, 844)}


def pages(site: Path) -> list[tuple[str, str, str]]:
    """(name, path, selector that says the page has drawn) for every page type of this build."""
    index = json.loads((site / "data" / "index.js").read_text().split("]=", 1)[1].rstrip().rstrip(";"))
    mechs = json.loads((site / "data" / "mechanisms.js").read_text().split("]=", 1)[1].rstrip().rstrip(";"))
    names = [m["name"] for m in mechs]
    # a mechanism with a recurrent state and efficiency curves shows every section of its page
    one = next((n for n in ("based", "linear", "mamba") if n in names), names[0] if names else "softmax")
    pair = [n for n in ("softmax", "linear", "based", "mamba") if n in names][:3] or names[:2]
    table = next((t for t in index["tables"] if t["pattern"] == "causal_self"), (index["tables"] or [None])[0])
    run_id = None
    if table:
        data = json.loads((site / "data" / f"{table['file']}.js").read_text().split("]=", 1)[1].rstrip().rstrip(";"))
        cell = next((c for c in data["cells"] if c["status"] == "ok" and c["row"].startswith(one + "\x00")), None) or \
            next((c for c in data["cells"] if c["status"] == "ok"), None)
        run_id = ",".join(r[0] for r in cell["runs"]) if cell else None
    out = [("overview", "index.html#pattern=causal_self", "#rows tr"),
           ("mechanisms", "mechanism.html", "#mech-list .card"),
           ("mechanism", f"mechanism.html#name={one}", "#patterns li"),
           ("compare", "compare.html#names=" + ",".join(pair), "table.compare"),
           ("efficiency", "efficiency.html", "section.pattern svg"),
           ("cost", "cost.html#pattern=causal_self", ".task-plot svg"),
           ("zoology", "zoology.html", "#zoology-body svg, #no-zoology")]
    if run_id:
        out.append(("run", f"run.html?ids={run_id}", ".card pre.command"))
    return out


def quantise(path: Path, colours: int) -> None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib-free installs too; skip if absent
        return
    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / "leaderboard" / "results" / "cpu"), help="records to build from (default: leaderboard/results/cpu)")
    parser.add_argument("--demo", action="store_true", help="synthetic records instead (tests/leaderboard_fixture.py)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="where the PNGs go (default: docs/screenshots)")
    parser.add_argument("--max-height", type=int, default=1800, help="capture at most this many CSS pixels from the top (default 1800)")
    parser.add_argument("--colours", type=int, default=128, help="palette size of the PNGs (default 128; 0 keeps full colour)")
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
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.demo:
            sys.path.insert(0, str(ROOT / "tests"))  # the synthetic records are a test fixture
            from leaderboard_fixture import demo_records, write_records, zoology_records  # noqa: PLC0415

            results = write_records(demo_records(seeds=3) + zoology_records(), tmp / "results")
            norm = tmp / "normalisation-demo.json"
            leaderboard.build(results, tmp / "site", normalisation=norm, freeze=True, warn=lambda m: None)
        else:
            leaderboard.build(args.results, tmp / "site", warn=lambda m: None)
        site = (tmp / "site").resolve()
        shots = pages(site)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=ARGS)
            for label, (w, h) in WIDTHS.items():
                context = browser.new_context(viewport={"width": w, "height": h}, device_scale_factor=1)
                page = context.new_page()
                page.on("console", lambda m: problems.append(f"{page.url}: console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
                page.on("request", lambda r: None if r.url.startswith(("file://", "data:", "blob:")) else problems.append(f"network request {r.url}"))
                for name, path, selector in shots:
                    page.goto(f"file://{site}/{path}")
                    page.wait_for_selector(selector)
                    page.wait_for_timeout(150)
                    width = page.evaluate("document.documentElement.scrollWidth")
                    if width > w + 1:
                        problems.append(f"{name} at {w} px: the page is {width} px wide")
                    full = page.evaluate("document.documentElement.scrollHeight")
                    target = out / f"{name}-{label}.png"
                    page.screenshot(path=str(target), full_page=True, clip={"x": 0, "y": 0, "width": w, "height": min(full, args.max_height)})
                    if args.colours:
                        quantise(target, args.colours)
                    print(f"{target} ({target.stat().st_size / 1e3:.0f} kB)")
                context.close()
            browser.close()
    total = sum(f.stat().st_size for f in out.glob("*.png"))
    print(f"{len(list(out.glob('*.png')))} screenshots, {total / 1e6:.2f} MB in {out}")
    if problems:
        print("problems:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
