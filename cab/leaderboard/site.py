"""`cab leaderboard build` and `cab leaderboard serve`: result records in, a static web site out.

The site is static and works from file://: the pages are written from one template (leaderboard/page.html,
`PAGES`: each page's title, nav key and scripts), the assets (leaderboard/assets/*; both installed as the
package `cab.leaderboard_site`) are copied as they are, and the data is written as small JavaScript
files that assign JSON to `window.CAB_DATA` (a `<script src>` loads from file://, `fetch()` does
not). Data is sharded as the lessons of HELM (a 260 MB runs.json) and MTEB (20 s to load a table)
suggest: one file per scale × hardware × pattern table, one per efficiency setting, one per
mechanism (mech/<name>.js, read by its page and the compare view), the Zoology view, and runs spread
over 256 files by a hash of their id, so the overview reads about a hundred kilobytes whatever the
size of the results folder. Beside them, the full data set for download: records.jsonl, runs.csv,
efficiency.csv (`cab.leaderboard.downloads`).

Every string in a record is untrusted. Python writes record strings only into those data files, as
JSON with `<`, `>` and `&` escaped (so `</script>` and `<!--` cannot appear); the pages' JavaScript
puts them into the DOM with textContent only. See docs/reading-results.md.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from cab.leaderboard import data, downloads, mechanisms, zoology
from cab.results.environment import git_output, now_iso

SITE_PACKAGE = "cab.leaderboard_site"
DEFAULT_NORMALISATION = "normalisation-v2.json"
# the site's pages, each written from leaderboard/page.html: file -> (title, data-page, its scripts in assets/
# after common.js; the pages that draw plots load plot.js)
PAGES = {
    "index.html": ("Overview", "overview", ("overview",)),
    "mechanism.html": ("Mechanisms", "mechanism", ("plot", "mechanism")),
    "compare.html": ("Compare", "compare", ("plot", "compare")),
    "efficiency.html": ("Efficiency", "efficiency", ("plot", "efficiency")),
    "cost.html": ("Accuracy versus cost", "cost", ("plot", "cost")),
    "zoology.html": ("Zoology: accuracy versus state size", "zoology", ("plot", "zoology")),
    "run.html": ("Run", "run", ("run",)),
}
PAGE_TEMPLATE = "page.html"
RUN_SHARDS = 256


def page_texts(template: str) -> dict[str, str]:
    """Every page's HTML from the one template (its leading comment dropped): title, data-page, script."""
    body = template[template.index("-->") + 3 :].lstrip("\n") if template.startswith("<!--") else template
    def scripts(names):
        return "\n".join(f'<script src="assets/{name}.js"></script>' for name in names)

    return {page: body.replace("<!--TITLE-->", title).replace("<!--PAGE-->", key).replace("<!--SCRIPTS-->", scripts(names))
            for page, (title, key, names) in PAGES.items()}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


def print_warning(message: str) -> None:
    print(f"cab leaderboard: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# JSON inside JavaScript


def js_json(obj: Any) -> str:
    """JSON safe to place in a <script> (inline or loaded by src): `<`, `>` and `&` as \\u escapes, so a
    record string cannot close the script (`</script>`) or open an HTML comment (`<!--`); U+2028/9
    escaped for old parsers. The escapes only ever occur inside JSON strings, so the value is unchanged."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def _write_js(path: Path, key: str, obj: Any) -> int:
    text = f"(window.CAB_DATA=window.CAB_DATA||{{}})[{json.dumps(key)}]={js_json(obj)};\n"
    path.write_text(text, encoding="utf-8")
    return len(text)


# ---------------------------------------------------------------------------------------------------
# build


def site_source() -> Path:
    return Path(str(resources.files(SITE_PACKAGE)))


def default_normalisation_path() -> Path:
    return site_source() / DEFAULT_NORMALISATION


def read_normalisation(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        norm = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"normalisation file {path} is unreadable: {exc}") from None
    problems = data.check_normalisation(norm)
    if problems:
        raise UsageError(f"normalisation file {path}: {problems[0]}")
    norm["file"] = path.name
    return norm


def build(results: str | Path = "results", out: str | Path = "site", normalisation: str | Path | None = None,
          freeze: bool = False, warn=print_warning) -> dict[str, Any]:
    """Build the site; returns a summary (counts, timings, files). Raises UsageError for bad input."""
    t0 = time.perf_counter()
    results, out = Path(results), Path(out)
    if not results.is_dir():
        raise UsageError(f"results directory {results} does not exist")
    norm_path = Path(normalisation) if normalisation else default_normalisation_path()

    records, skipped = data.load_records(results, warn=warn)
    t_load = time.perf_counter()

    if freeze:
        if norm_path.exists():
            raise UsageError(f"{norm_path} exists and frozen constants are never overwritten; "
                             f"write a new version (--normalisation .../normalisation-v2.json) or delete it")
        version = int(m.group(1)) if (m := re.search(r"-v(\d+)\.json$", norm_path.name)) else 1
        tables = data.build_tables(records, None)
        frozen = data.freeze_normalisation(tables, version=version, source=f"{len(records)} records from {results}")
        norm_path.parent.mkdir(parents=True, exist_ok=True)
        norm_path.write_text(json.dumps(frozen, indent=1, sort_keys=False) + "\n")
        patterns = [p for scale in frozen["constants"].values() for p in scale.values()]
        warn(f"froze normalisation v{version} ({sum(len(p) for p in patterns)} task constants over "
             f"{len(patterns)} scale x pattern tables) into {norm_path}")
    norm = read_normalisation(norm_path)
    if norm is None:
        warn(f"no normalisation file at {norm_path}: the site shows per-task scores but no aggregate "
             f"(freeze one with --freeze-normalisation)")

    tables = data.build_tables(records, norm, warn=warn)
    efficiency = data.build_efficiency(records, warn=warn)
    zoo = zoology.build_zoology(records)
    t_compute = time.perf_counter()
    # what each attention is comes from the registry (imports the attention modules, and torch)
    mech_index, mech_pages = mechanisms.build_mechanisms(records, tables, efficiency, warn=warn)
    t_meta = time.perf_counter()

    # the output folder: pages and assets from the package, data regenerated
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    if data_dir.exists():
        if not (data_dir / "index.js").exists():
            raise UsageError(f"{data_dir} exists and was not written by cab leaderboard; choose another --out")
        shutil.rmtree(data_dir)
    (data_dir / "runs").mkdir(parents=True)
    (data_dir / "mech").mkdir()
    src = site_source()
    commit = git_output("rev-parse", "--short=12", "HEAD")
    dirty = git_output("status", "--porcelain", "--untracked-files=no")
    import cab

    built_at = now_iso()
    stamp = f"built {built_at} by cab {cab.__version__}" + (f" (commit {commit}{', dirty' if dirty else ''})" if commit else "")
    template = (src / PAGE_TEMPLATE).read_text(encoding="utf-8")
    for page, text in page_texts(template).items():
        out.joinpath(page).write_text(text.replace("<!--STAMP-->", html.escape(stamp)), encoding="utf-8")
    assets_out = out / "assets"
    assets_out.mkdir(exist_ok=True)
    for asset in sorted((src / "assets").iterdir()):
        if asset.is_file() and asset.suffix in (".js", ".css", ".svg", ".png"):
            shutil.copyfile(asset, assets_out / asset.name)

    bytes_written = 0
    table_index = []
    for i, table in enumerate(tables):
        name = f"table-{i}"
        bytes_written += _write_js(data_dir / f"{name}.js", name, table)
        table_index.append({"file": name, "scale": table["scale"], "hardware": table["hardware"],
                            "pattern": table["pattern"], "tasks": list(table["tasks"]),
                            "runs": sum(len(c["runs"]) for c in table["cells"])})
    eff_index = []
    for i, group in enumerate(efficiency["groups"]):
        name = f"eff-{i}"
        bytes_written += _write_js(data_dir / f"{name}.js", name, group)
        eff_index.append({"file": name, "scale": group["scale"], "hardware": group["hardware"], "settings": group["settings"],
                          "patterns": list(group["patterns"])})

    bytes_written += _write_js(data_dir / "mechanisms.js", "mechanisms", mech_index)
    for page in mech_pages.values():
        bytes_written += _write_js(data_dir / "mech" / f"{page['file']}.js", "mech-" + page["file"], page)
    bytes_written += _write_js(data_dir / "zoology.js", "zoology", zoo)
    # the full data set: every record (JSON Lines), the training runs and the efficiency points (CSV)
    files = [("records.jsonl", "every record, one JSON object per line", downloads.write_jsonl),
             ("runs.csv", "training runs: one row per run and seed, columns named as in the record", downloads.write_runs_csv),
             ("efficiency.csv", "efficiency runs: one row per run and measured length", downloads.write_efficiency_csv)]
    download_index = []
    for name, what, write in files:
        size = write(records, data_dir / name)
        bytes_written += size
        download_index.append({"file": name, "what": what, "bytes": size})

    shards: dict[str, dict[str, Any]] = {}
    for r in records:
        shards.setdefault(data.run_shard(r["run_id"], RUN_SHARDS), {})[r["run_id"]] = data.run_summary(r)
    for shard, runs in shards.items():
        bytes_written += _write_js(data_dir / "runs" / f"{shard}.js", f"runs-{shard}", runs)

    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    index = {
        "built_at": built_at,
        "stamp": stamp,
        "cab_version": cab.__version__,
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "results_dir": results.name,
        "records": len(records),
        "train_records": sum(r["kind"] == "train" for r in records),
        "efficiency_records": sum(r["kind"] == "efficiency" for r in records),
        "skipped": [{"file": Path(p).name, "problem": why[:300]} for p, why in skipped][:200],
        "skipped_count": len(skipped),
        "statuses": statuses,
        "latest_run": max((str(r.get("started_at")) for r in records), default=None),
        "patterns": ["noncausal_self", "causal_self", "noncausal_cross", "causal_cross"],
        "tables": table_index,
        "efficiency": eff_index,
        "efficiency_lengths_available": efficiency["available"],
        "efficiency_baselines": efficiency["baselines"],
        "normalisation": norm,
        "run_shards": RUN_SHARDS,
        "dirty_runs": sum(data.is_dirty(r) for r in records),
        "mechanisms": len(mech_index),
        "zoology": [{"scale": g["scale"], "hardware": g["hardware"], "pattern": g["pattern"], "facets": len(g["facets"])} for g in zoo],
        "downloads": download_index,
    }
    bytes_written += _write_js(data_dir / "index.js", "index", index)
    if norm is not None:
        shutil.copyfile(norm_path, data_dir / norm_path.name)
    t_end = time.perf_counter()
    return {
        "out": str(out), "records": len(records), "skipped": len(skipped), "tables": len(tables),
        "efficiency_groups": len(eff_index), "run_files": len(shards), "data_bytes": bytes_written,
        "mechanisms": len(mech_index),
        "seconds": {"load": round(t_load - t0, 3), "compute": round(t_compute - t_load, 3),
                    "metadata": round(t_meta - t_compute, 3), "write": round(t_end - t_meta, 3), "total": round(t_end - t0, 3)},
        "normalisation": norm_path.name if norm else None,
    }


# ---------------------------------------------------------------------------------------------------
# serve


def serve(directory: str | Path = "site", port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve a built site on localhost until interrupted (the site also opens from file:// alone)."""
    import functools
    import http.server

    directory = Path(directory)
    if not (directory / "index.html").exists():
        raise UsageError(f"{directory} has no index.html; build it first: cab leaderboard build --out {directory}")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"Serving {directory} at http://{host}:{server.server_address[1]}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
