"""Markdown tables: the one writer, and the leaderboard's overview written with it.

`markdown_table` writes every markdown table cab prints: `cab leaderboard table` (the overview,
below) and `cab bench table` (`cab.bench.report`). A cell is a record's string, which is untrusted:
a `|` in it is escaped and a line break made a space, so no value can split a row or end the table.

`markdown_tables` is the overview (per scale × hardware × pattern, attentions × tasks) from the same
aggregation as the site (`cab.leaderboard.data`); `replace_tables_block` puts it into a document
between its `<!-- tables:start -->` and `<!-- tables:end -->` markers (docs/results.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from cab.leaderboard import data
from cab.leaderboard.site import UsageError, default_normalisation_path, print_warning, read_normalisation


def markdown_cell(value: Any) -> str:
    """One cell's text: `|` escaped, line breaks as spaces."""
    return " ".join(str(value).replace("|", "\\|").splitlines())


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The lines of a markdown table: the header, the `|---|` rule, one line per row. A row shorter
    than the header is padded with empty cells; a longer one is an error (it would shift columns)."""
    width = len(header)

    def line(cells: Sequence[Any]) -> str:
        if len(cells) > width:
            raise ValueError(f"a row of {len(cells)} cells in a table of {width} columns: {list(cells)!r}")
        cells = [markdown_cell(c) for c in cells] + [""] * (width - len(cells))
        return "| " + " | ".join(cells) + " |"

    return [line(header), "|" + "---|" * width, *(line(row) for row in rows)]


# ---------------------------------------------------------------------------------------------------
# the overview as markdown (for papers, notes and docs/results.md)


def _fmt(value: float) -> str:
    magnitude = abs(value)
    return f"{value:.3g}" if magnitude < 0.01 or magnitude >= 1000 else f"{value:.3f}"


def markdown_tables(results: str | Path, normalisation: str | Path | None = None, pattern: str | None = None,
                    warn=print_warning) -> str:
    """The overview's tables as markdown, from the same aggregation as the site: per scale × hardware ×
    pattern, attentions × tasks, each cell the primary metric's mean ± standard deviation over the ok
    seeds (n), or the status when no seed is ok; the aggregate when constants are frozen; the
    baselines as reference rows."""
    records, _ = data.load_records(results, warn=warn)
    norm_path = Path(normalisation) if normalisation else default_normalisation_path()
    norm = read_normalisation(norm_path)
    out: list[str] = []
    for table in data.build_tables(records, norm):
        if pattern and table["pattern"] != pattern:
            continue
        tasks = list(table["tasks"])
        heads = []
        for task in tasks:
            info = table["tasks"][task]
            metric = info["primary_metric"]
            arrow = "↑" if info["metric_info"].get(metric, {}).get("higher_is_better", True) else "↓"
            heads.append(f"{task}: {metric} {arrow}" + GATE_MARK.get((info.get("gate") or {}).get("status"), ""))
        scored = bool(table["aggregate"]["tasks"])
        rows: list[list[str]] = []
        cells = {(c["row"], c["task"]): c for c in table["cells"]}
        for row in table["rows"]:
            parts = [row["attention"] + (f" [{row['variant']}]" if row["variant"] else "")]
            if scored:
                agg = table["aggregate"]["rows"].get(row["id"]) or {}
                score = agg.get("score")
                parts.append("–" if score is None else f"{score:+.2f}" + ("" if agg.get("complete") else "*"))
            for task in tasks:
                cell = cells.get((row["id"], task))
                metric = table["tasks"][task]["primary_metric"]
                if cell is None:
                    parts.append("")
                elif cell["status"] == "ok" and metric in cell["metrics"]:
                    mean, std, n = cell["metrics"][metric]
                    parts.append(f"{_fmt(mean)} ± {_fmt(std)} ({n})" if n > 1 else f"{_fmt(mean)} (1)")
                else:
                    parts.append(cell["status"])
            rows.append(parts)
        for ref in table["references"]:
            values = []
            for task in tasks:
                value = ref["values"].get(task, {}).get(table["tasks"][task]["primary_metric"])
                values.append("" if value is None else f"*{_fmt(value)}*")
            if any(values):  # a baseline row only where some task reports it
                rows.append([f"*{ref['label']}*", *([""] if scored else []), *values])
        excluded = table["aggregate"].get("excluded") or {}
        if scored:
            agg_note = ("Aggregate: mean z-score over the learnt tasks with frozen constants (* = not all of them)"
                        + (", leaving out the columns not learnt (†). " if excluded else ". "))
        elif excluded and normalisation_for_table(norm, table):
            agg_note = "No aggregate: no column with frozen constants is learnt. "
        else:
            agg_note = ""
        out += [f"### {table['pattern']} · scale {table['scale']} · {table['hardware']}", "",
                *markdown_table(["attention", *(["aggregate"] if scored else []), *heads], rows),
                "", "Cells: mean ± std over the ok seeds (count); a status where no seed is ok. " + agg_note
                + "Italic rows: baselines the tasks record.", "",
                *gate_lines(table), ""]
    return "\n".join(out)


GATE_MARK = {"not_learnt": " †", "unknown": " ‡"}
GATE_TEXT = {"learnt": "learnt", "not_learnt": "not learnt", "unknown": "no verdict"}


def normalisation_for_table(norm: dict[str, Any] | None, table: dict[str, Any]) -> dict[str, Any]:
    return data.normalisation_for(norm, table["scale"], table["pattern"])


def gate_lines(table: dict[str, Any]) -> list[str]:
    """Each column's reference gate verdict with its reason, one line each (cab/gates.py)."""
    lines = ["Reference gate per column (a column is learnt when softmax clears its task's gate on every seed; "
             "† not learnt, left out of the aggregate; ‡ no verdict):", ""]
    for task, info in table["tasks"].items():
        gate = info.get("gate") or {}
        status = gate.get("status") or "unknown"
        reason = markdown_cell(gate.get("reason") or "")
        lines.append(f"- {task}{GATE_MARK.get(status, '')}: {GATE_TEXT.get(status, status)}" + (f": {reason}" if reason else ""))
    return lines


TABLES_BLOCK = re.compile(r"<!-- tables:start(?::[^>]*)? -->\n.*?<!-- tables:end -->", re.S)


def replace_tables_block(doc: Path, tables: str, command: str) -> None:
    """Put `tables` between the markers in `doc` (docs/results.md), naming the command that printed them."""
    text = doc.read_text()
    if not TABLES_BLOCK.search(text):
        raise UsageError(f"{doc} has no '<!-- tables:start -->' ... '<!-- tables:end -->' block to replace")
    block = f"<!-- tables:start: {command} -->\n{tables.strip()}\n\n<!-- tables:end -->"
    doc.write_text(TABLES_BLOCK.sub(lambda _: block, text, count=1))
