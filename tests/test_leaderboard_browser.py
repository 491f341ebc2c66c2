"""The built site in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Pages are opened from file://, as a user opening site/index.html would. Skipped, with the reason,
when chromium or the playwright package is missing (.ci/install-browser installs both).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from cab.leaderboard import site as leaderboard
from leaderboard_fixture import demo_records, efficiency_record, train_record, write_records

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Debian's chromium and the playwright package (run .ci/install-browser)",
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL_NAME = '<img src=x onerror="window.__xss=1">'
EVIL_SCRIPT = "</script><script>window.__xss=2</script>"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A demo grid (every status, three seeds, reference rows, efficiency curves) plus records whose
    names, reasons and errors are HTML and script, built with frozen normalisation constants."""
    root = tmp_path_factory.mktemp("browser")
    records = demo_records(seeds=3)
    evil = train_record(EVIL_NAME, "mqar", "noncausal_self", seed=0)
    evil["command"] = "cab run " + EVIL_SCRIPT
    failed = train_record("evil_fail", "mqar", "noncausal_self", status="failed")
    failed["error"] = {"type": "RuntimeError", "message": EVIL_SCRIPT, "traceback": "<!-- " + EVIL_SCRIPT}
    unsupported = train_record("evil_unsupported", "mqar", "noncausal_self", status="unsupported")
    unsupported["reason"] = "<svg onload=window.__xss=3>"
    eff = efficiency_record(EVIL_NAME, "causal_self")
    results = write_records(records + [evil, failed, unsupported, eff], root / "results")
    out = root / "site"
    leaderboard.build(results, out, normalisation=root / "normalisation-v1.json", freeze=True, warn=lambda m: None)
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page that records console errors, uncaught exceptions and dialogs (alert() would be one)."""

    def __init__(self, browser, site: Path):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        self.page = self.context.new_page()
        self.site = site
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        # the site is offline by design: every request stays on file:// (or a blob: download)
        self.network: list[str] = []
        self.page.on("request", lambda r: None if r.url.startswith(("file://", "blob:", "data:")) else self.network.append(r.url))

    def open(self, path: str):
        self.page.goto(f"file://{self.site}/{path}")
        return self.page

    def texts(self, selector: str) -> list[str]:
        return self.page.eval_on_selector_all(selector, "els => els.map(e => e.textContent)")


@pytest.fixture
def page(browser, site):
    p = Page(browser, site)
    yield p
    assert not p.dialogs, p.dialogs
    assert not p.network, p.network
    assert p.page.evaluate("window.__xss") is None
    p.context.close()


def first_values(p: Page) -> list[float | None]:
    """The sorted column's values, top to bottom (None for a status badge)."""
    key = p.page.get_attribute("#board th.sorted", "data-key")
    cols = p.texts("#board thead th")
    i = [c.strip() for c in p.page.eval_on_selector_all("#board thead th", "els => els.map(e => e.dataset.key)")].index(key)
    cells = p.page.eval_on_selector_all(f"#rows tr td:nth-child({i + 1})", "els => els.map(e => { const a = e.querySelector('a.val'); return a ? a.firstChild.textContent : null; })")
    assert cols
    return [float(c) if c is not None else None for c in cells]


def test_overview_renders_tables(page):
    p = page.open("index.html")
    p.wait_for_selector("#rows tr")
    attentions = page.texts("#rows td.name span:first-child")
    assert len(attentions) == 12 + 3  # the demo's attentions plus the three hostile records
    headers = page.texts("#board thead th")
    assert headers[1].startswith("aggregate") and any(h.startswith("mqar") for h in headers)
    # cells: mean ± std and the seed count; statuses as words with their reason, never blank
    assert any("n=3" in t for t in page.texts("#rows td"))
    assert "reference · guess a context value" not in page.texts("tbody.ref td:first-child")  # the prefix is CSS
    assert "guess a context value" in page.texts("tbody.ref td:first-child")
    assert "failed" in page.texts("#rows .badge") and "unsupported" in page.texts("#rows .badge")
    assert "<svg onload=window.__xss=3>" in page.texts("#rows .why")
    assert all(t.strip() for t in page.texts("#rows td"))
    # the page says where its numbers come from and when it was built
    context = p.text_content("#context")
    assert "scale cpu" in context and "hardware cpu-2c" in context and "site built" in context
    assert "built" in p.text_content("#stamp")
    assert p.is_visible("#normalisation") and "normalisation-v1.json" in p.text_content("#normalisation summary")
    assert not page.errors, page.errors


def test_sorting_respects_direction(page):
    p = page.open("index.html#pattern=noncausal_self")
    p.wait_for_selector("#rows tr")
    p.click('#board th[data-key="forecasting:mse"]')  # lower is better: ascending, missing last
    values = first_values(page)
    numbers = [v for v in values if v is not None]
    assert numbers == sorted(numbers) and values[: len(numbers)] == numbers
    p.click('#board th[data-key="forecasting:mse"]')  # again: reversed, missing still last
    numbers2 = [v for v in first_values(page) if v is not None]
    assert numbers2 == sorted(numbers, reverse=True)
    p.click('#board th[data-key="mqar:accuracy"]')  # higher is better: descending
    acc = [v for v in first_values(page) if v is not None]
    assert acc == sorted(acc, reverse=True) and len(acc) >= 10
    assert "sort=mqar" in p.url  # the view is shareable
    # a partial aggregate (performer failed one causal-cross task) ranks after complete ones both ways
    p.click('#tabs button[data-pattern="causal_cross"]')
    # (selectors, not wait_for_function: the site's Content-Security-Policy forbids the eval it uses)
    p.wait_for_selector("#context b:text-is('causal cross')")
    for _ in range(2):
        p.click('#board th[data-key="agg"]')
        names = page.texts("#rows td.name span:first-child")
        scored = [t for t in page.texts("#rows td.agg") if t != "—"]
        assert "tasks" in scored[-1] and all("tasks" not in t for t in scored[:-1])
        assert names[len(scored) - 1] == "performer"
    assert not page.errors, page.errors


def test_filters_change_what_is_shown(page):
    p = page.open("index.html")
    p.wait_for_selector("#rows tr")
    everyone = page.texts("#rows td.name span:first-child")
    p.fill("#f-search", "in")
    shown = page.texts("#rows td.name span:first-child")
    assert sorted(shown) == sorted(a for a in everyone if "in" in a) and 0 < len(shown) < len(everyone)
    p.fill("#f-search", "")
    p.select_option("#f-task", "mqar")  # one task: all its metrics as columns
    keys = p.eval_on_selector_all("#board thead th", "els => els.map(e => e.dataset.key)")
    assert keys == ["attention", "agg", "mqar:accuracy", "mqar:loss"]
    p.click('#tabs button[data-pattern="causal_cross"]')  # another pattern
    # (selectors, not wait_for_function: the site's Content-Security-Policy forbids the eval it uses)
    p.wait_for_selector("#context b:text-is('causal cross')")
    assert "pattern=causal_cross" in p.url
    names = page.texts("#rows td.name span:first-child")
    assert "mamba" in names and "unsupported" in page.texts("#rows .badge")
    p.select_option("#f-view", "z")
    assert p.eval_on_selector_all("#board thead th .dir", "els => els.some(e => e.textContent.includes('z'))")
    assert not page.errors, page.errors


def test_download_csv_is_what_is_shown(page):
    p = page.open("index.html#pattern=noncausal_self")
    p.wait_for_selector("#rows tr")
    p.fill("#f-search", "a")
    shown = len(page.texts("#rows tr"))
    with p.expect_download() as info:
        p.click("#dl-csv")
    rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
    assert len(rows) == shown and all("a" in r["attention"] for r in rows)
    assert {"mqar accuracy mean", "mqar accuracy std", "mqar accuracy n", "mqar accuracy status"} <= set(rows[0])
    assert not page.errors, page.errors


def test_plots_draw(page):
    p = page.open("efficiency.html")
    p.wait_for_selector("section.pattern svg")
    assert len(p.query_selector_all("section.pattern .plot svg")) == 4  # time and memory for two patterns
    assert len(p.query_selector_all("section.pattern g.series path")) >= 10
    assert len(p.query_selector_all("section.pattern g.fail")) >= 2  # softmax and vanilla OOM at 8K
    assert "hardware cpu-2c" in p.text_content("#context")
    assert EVIL_NAME in page.texts("table.eff td a")
    p.click("table.eff td a >> nth=0")  # an efficiency run's page: its points, OOM included
    p.wait_for_selector(".card h3:text-is('Efficiency points')")
    assert "oom" in [t.lower() for t in page.texts(".card .badge")] or "ok" in page.texts(".card .badge")
    p = page.open("cost.html")
    p.wait_for_selector(".task-plot svg")
    assert len(p.query_selector_all(".task-plot circle.frontier-pt")) >= 2
    assert len(p.query_selector_all(".task-plot path.frontier")) >= 1
    assert "✓ frontier" in page.texts("#points td")
    p.select_option("#f-axis", "state_size")
    p.wait_for_selector(".task-plot svg text.lbl:has-text('state size')")
    assert not page.errors, page.errors


def test_run_page_opens_from_a_cell(page):
    p = page.open("index.html#pattern=noncausal_self&task=mqar")
    p.wait_for_selector("#rows a.val")
    p.click("#rows a.val >> nth=0")
    p.wait_for_selector(".card pre.command")
    assert "run.html?ids=" in p.url
    assert len(p.query_selector_all(".card")) == 3  # three seeds
    assert p.text_content(".card pre.command").startswith("cab run attention=")
    text = p.text_content("main")
    for needle in ("scale", "hardware", "commit", "duration", "Resolved config", "Environment"):
        assert needle in text
    assert not page.errors, page.errors


def test_hostile_strings_do_not_execute(page):
    p = page.open("index.html#pattern=noncausal_self&task=mqar&q=evil")
    p.wait_for_selector("#rows tr")
    p.fill("#f-search", "")
    assert EVIL_NAME in page.texts("#rows td.name span:first-child")
    assert "RuntimeError: " + EVIL_SCRIPT in page.texts("#rows .why")
    # open the hostile runs' pages: command, error and traceback shown as text
    p.fill("#f-search", "evil")
    hrefs = p.eval_on_selector_all("#rows td a", "els => els.map(a => a.getAttribute('href'))")
    for href in hrefs:
        q = page.open(href)
        q.wait_for_selector(".card")
    p = page.open("index.html#pattern=noncausal_self&task=mqar&q=img")
    p.wait_for_selector("#rows a.val")
    p.click("#rows a.val >> nth=0")
    p.wait_for_selector(".card pre.command")
    assert EVIL_SCRIPT in p.text_content(".card pre.command")
    assert p.query_selector("main img") is None and p.query_selector("main script") is None
    assert not page.errors, page.errors


def test_unlearnt_column_is_marked_muted_and_left_out_of_the_aggregate(page, site):
    """The demo's listops column (noncausal self): softmax misses its gate (the records state a floor of
    0.6), so the column is marked, muted and its values are not in the aggregate; mqar and
    forecasting are learnt and carry no mark."""
    p = page.open("index.html#pattern=noncausal_self")
    p.wait_for_selector("#rows tr")
    th = '#board th[data-key="listops:accuracy"]'
    assert p.get_attribute(th, "data-gate") == "not_learnt" and "unlearnt" in p.get_attribute(th, "class").split()
    assert page.texts(th + " .badge") == ["not learnt"]
    for key in ("mqar:accuracy", "forecasting:mse"):
        assert p.get_attribute(f'#board th[data-key="{key}"]', "data-gate") == "learnt"
        assert p.query_selector(f'#board th[data-key="{key}"] .badge') is None
        assert "unlearnt" not in (p.get_attribute(f'#board th[data-key="{key}"]', "class") or "")
    # the reason is on the page, not only in a tooltip
    listops = p.text_content('#gates li[data-task="listops"]')
    assert p.is_visible('#gates li[data-task="listops"]')
    assert "not learnt" in listops and "softmax accuracy" in listops and "needs ≥ 0.600 on every seed" in listops
    assert "left out of the aggregate" in listops
    assert p.get_attribute('#gates li[data-task="mqar"]', "data-gate") == "learnt"
    # every cell of the column is muted, and none of them is bold as a "best"
    keys = p.eval_on_selector_all("#board thead th", "els => els.map(e => e.dataset.key)")
    col = keys.index("listops:accuracy") + 1
    classes = p.eval_on_selector_all(f"#rows tr td:nth-child({col})", "els => els.map(e => e.className)")
    assert classes and all("unlearnt" in c.split() and "best" not in c.split() for c in classes)
    assert "unlearnt" not in " ".join(p.eval_on_selector_all(f"#rows tr td:nth-child({keys.index('mqar:accuracy') + 1})", "els => els.map(e => e.className)"))
    # the aggregate's header says how many tasks it averages
    assert "2 of 3 tasks" in p.text_content('#board th[data-key="agg"]')

    # z view: listops has no z-score, and each aggregate is the mean of the learnt tasks' z-scores
    p.select_option("#f-view", "z")
    p.wait_for_selector('#board th[data-key="listops:accuracy"] .dir:text("z")')
    keys = p.eval_on_selector_all("#board thead th", "els => els.map(e => e.dataset.key)")
    rows = p.eval_on_selector_all("#rows tr", "trs => trs.map(tr => [...tr.children].map(td => { const a = td.querySelector('a'); return a ? a.textContent : td.textContent; }))")
    shown = {row[0]: dict(zip(keys, row)) for row in rows}

    def num(text):
        try:
            return float(text)
        except ValueError:  # "—", or a status badge (timeout, unsupported)
            return None

    assert all(num(r["listops:accuracy"]) is None for r in shown.values())
    assert sum(r["listops:accuracy"] == "—" for r in shown.values()) >= 10

    # and it is not the mean with listops in it: the frozen listops constants give each row a z-score
    # of its own, which would move most shown aggregates by more than their rounding
    norm = json.loads((site / "data" / "normalisation-v1.json").read_text())["constants"]["cpu"]["noncausal_self"]
    table = _table_data(site, "noncausal_self")
    cells = {(c["row"].split("\x00")[0], c["task"]): c for c in table["cells"]}
    checked = differs = 0
    for name, r in shown.items():
        agg, f, m = num(r["agg"]), num(r["forecasting:mse"]), num(r["mqar:accuracy"])
        if agg is None or f is None or m is None:
            continue
        assert agg == pytest.approx((f + m) / 2, abs=0.006), name
        c = cells.get((name, "listops"))
        if c and c["status"] == "ok":
            zs = [(1 if k["higher_is_better"] else -1) * (c["metrics"][metric][0] - k["mean"]) / k["std"]
                  for metric, k in norm["listops"].items() if metric in c["metrics"]]
            differs += abs(agg - (f + m + sum(zs) / len(zs)) / 3) > 0.006
        checked += 1
    assert checked >= 10 and differs >= checked // 2
    assert not page.errors, page.errors


def _table_data(site: Path, pattern: str) -> dict:
    index = _js_value(site / "data" / "index.js")
    meta = next(t for t in index["tables"] if t["pattern"] == pattern and t["scale"] == "cpu")
    return _js_value(site / "data" / f"{meta['file']}.js")


def _js_value(path: Path):
    text = path.read_text()
    return json.loads(text[text.index("]=") + 2:].rstrip().rstrip(";"))
