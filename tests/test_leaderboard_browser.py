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
from urllib.parse import quote

import pytest

from cab.leaderboard import site as leaderboard
from leaderboard_fixture import demo_records, efficiency_record, train_record, write_records, zoology_records

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


PLUGIN = "plugin_attn"
PLUGIN_REASON = "my lab's layer needs one sequence: no source to read"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A demo grid (every status, three seeds, reference rows, efficiency curves) plus records whose
    names, reasons and errors are HTML and script, built with frozen normalisation constants; plus a
    plugin attention registered outside cab.attentions with paper metadata, a Zoology grid (scale
    `zoo`), decode and distributed efficiency records, and a run from a dirty working tree."""
    from cab import MultiHeadAttention, Pattern, register_attention, registry

    root = tmp_path_factory.mktemp("browser")
    records = demo_records(seeds=3)
    evil = train_record(EVIL_NAME, "mqar", "noncausal_self", seed=0)
    evil["command"] = "cab run " + EVIL_SCRIPT
    failed = train_record("evil_fail", "mqar", "noncausal_self", status="failed")
    failed["error"] = {"type": "RuntimeError", "message": EVIL_SCRIPT, "traceback": "<!-- " + EVIL_SCRIPT}
    unsupported = train_record("evil_unsupported", "mqar", "noncausal_self", status="unsupported")
    unsupported["reason"] = "<svg onload=window.__xss=3>"
    eff = efficiency_record(EVIL_NAME, "causal_self")
    plugin = [train_record(PLUGIN, "mqar", "noncausal_self", seed=s, dirty=s == 0) for s in range(3)]
    for pattern in ("noncausal_cross", "causal_cross"):
        r = train_record(PLUGIN, "forecasting", pattern, status="unsupported")
        r["reason"] = PLUGIN_REASON
        plugin.append(r)
    plugin.append(efficiency_record(PLUGIN, "noncausal_self"))
    # a mechanism at chance: no better than guessing a context value (0.25 in the demo)
    plugin += [train_record("at_chance", "mqar", "noncausal_self", seed=s, metrics={"accuracy": 0.2 + 0.01 * s, "loss": 3.0}) for s in range(2)]
    zoo = zoology_records(attentions=("softmax", "linear", "based", "sliding_window"), cells=((64, 4), (256, 16)), widths=(32, 64), scale="zoo")
    extra = [efficiency_record(a, "causal_self", direction="decode") for a in ("softmax", "vanilla", "linear", "mamba")]
    extra += [efficiency_record(a, "causal_self", extra={"world_size": 4, "strategy": "ring"}) for a in ("softmax", "linear")]
    results = write_records(records + [evil, failed, unsupported, eff] + plugin + zoo + extra, root / "results")

    @register_attention(PLUGIN, patterns={Pattern.NONCAUSAL_SELF, Pattern.CAUSAL_SELF},
                        unsupported={Pattern.NONCAUSAL_CROSS: PLUGIN_REASON, Pattern.CAUSAL_CROSS: PLUGIN_REASON},
                        family="linear", paper={"title": "A plugin's paper", "authors": "Lab et al.", "venue": "arXiv", "year": 2031})
    class PluginAttention(MultiHeadAttention):
        """Plugin attention: a third-party layer registered through an entry point.

        Each query reads a running summary of the keys, so the layer carries a fixed-size state.
        """

        __module__ = "my_lab.attention"

    out = root / "site"
    try:
        leaderboard.build(results, out, normalisation=root / "normalisation-v1.json", freeze=True, warn=lambda m: None)
    finally:
        registry._ATTENTIONS.entries.pop(PLUGIN, None)
    return out


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A page that records console errors, uncaught exceptions and dialogs (alert() would be one)."""

    def __init__(self, browser, site: Path, width: int = 1400, height: int = 1000):
        self.context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
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
    attentions = page.texts("#rows td.name a.mech")
    assert len(attentions) == 12 + 3 + 2  # the demo's attentions, the three hostile records, the plugin, one at chance
    headers = page.texts("#board thead th")
    assert headers[1].startswith("aggregate") and any(h.startswith("mqar") for h in headers)
    # cells: mean ± std and the seed count; statuses as words with their reason, never blank
    assert any("n=3" in t for t in page.texts("#rows td"))
    # the baselines come first, before any mechanism: what "nothing learnt" scores is in view
    assert "guess a context value" in page.texts("tbody.ref td .refname")
    assert p.eval_on_selector("#board", "t => [...t.tBodies].map(b => b.id || b.className).join(',')") == "ref,rows"
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
        names = page.texts("#rows td.name a.mech")
        scored = [t for t in page.texts("#rows td.agg") if t != "—"]
        assert "tasks" in scored[-1] and all("tasks" not in t for t in scored[:-1])
        assert names[len(scored) - 1] == "performer"
    assert not page.errors, page.errors


def test_filters_change_what_is_shown(page):
    p = page.open("index.html")
    p.wait_for_selector("#rows tr")
    everyone = page.texts("#rows td.name a.mech")
    p.fill("#f-search", "in")
    shown = page.texts("#rows td.name a.mech")
    assert sorted(shown) == sorted(a for a in everyone if "in" in a) and 0 < len(shown) < len(everyone)
    p.fill("#f-search", "")
    p.select_option("#f-task", "mqar")  # one task: all its metrics as columns
    keys = p.eval_on_selector_all("#board thead th", "els => els.map(e => e.dataset.key)")
    assert keys == ["attention", "agg", "mqar:accuracy", "mqar:loss"]
    p.click('#tabs button[data-pattern="causal_cross"]')  # another pattern
    # (selectors, not wait_for_function: the site's Content-Security-Policy forbids the eval it uses)
    p.wait_for_selector("#context b:text-is('causal cross')")
    assert "pattern=causal_cross" in p.url
    names = page.texts("#rows td.name a.mech")
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
    text = Path(info.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == shown and all("a" in r["attention"] for r in rows)
    # the CSV's columns are the JSON download's keys, with run ids: one vocabulary, no stray spaces
    assert {"mqar:accuracy:mean", "mqar:accuracy:std", "mqar:accuracy:n", "mqar:accuracy:status", "mqar:accuracy:run_ids"} <= set(rows[0])
    header = text.splitlines()[0].split(",")
    assert header == [h.strip() for h in header]
    with p.expect_download() as info:
        p.click("#dl-json")
    data = json.loads(Path(info.value.path()).read_text())
    assert len(data) == shown and list(data[0]) == header
    first = next(r for r in rows if r["mqar:accuracy:run_ids"])
    assert first["mqar:accuracy:run_ids"].split(" ") == next(d for d in data if d["attention"] == first["attention"])["mqar:accuracy:run_ids"]
    # and the full data set is one click away
    assert p.get_attribute(".fulldata a[href='data/records.jsonl']", "download") == "records.jsonl"
    assert not page.errors, page.errors


def test_plots_draw(page):
    p = page.open("efficiency.html")
    p.wait_for_selector("section.pattern svg")
    assert len(p.query_selector_all("section.pattern .plot > svg")) == 4  # time and memory for two patterns
    assert len(p.query_selector_all("section.pattern g.series path")) >= 10
    assert len(p.query_selector_all("section.pattern g.fail")) >= 2  # softmax and vanilla OOM at 8K
    assert "hardware cpu-2c" in p.text_content("#context")
    assert EVIL_NAME in page.texts("table.eff td a")
    p.click("table.eff td a.runlink >> nth=0")  # an efficiency run's page: its points, OOM included
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
    assert EVIL_NAME in page.texts("#rows td.name a.mech")
    assert "RuntimeError: " + EVIL_SCRIPT in page.texts("#rows .why")
    # open the hostile runs' pages: command, error and traceback shown as text
    p.fill("#f-search", "evil")
    hrefs = p.eval_on_selector_all("#rows td a:not(.mech)", "els => els.map(a => a.getAttribute('href'))")
    for href in hrefs:
        q = page.open(href)
        q.wait_for_selector(".card")
    # their mechanism pages: the names are text, with the reason of the unsupported one
    q = page.open("mechanism.html#name=" + quote(EVIL_NAME))
    q.wait_for_selector("#patterns li")
    assert q.text_content("#mech-name") == EVIL_NAME and "Not registered in this build" in q.text_content("#origin")
    q = page.open("mechanism.html#name=evil_unsupported")
    q.wait_for_selector("#patterns li")
    assert "<svg onload=window.__xss=3>" in q.text_content('#patterns li[data-pattern="noncausal_self"]')
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


# ------------------------------------------------------------------------------------------------
# v2: mechanism pages, compare, honest plots, every screen


def test_mechanism_page_of_a_plugin_attention(page):
    """A plugin registered outside cab.attentions gets a page from the registry alone: paper, family,
    its docstring's paragraph, patterns with the stated reasons (in the page, not in a tooltip), its
    results beside the reference and the baselines, its efficiency against softmax and vanilla."""
    p = page.open("mechanism.html")
    p.wait_for_selector("#mech-list .card")
    card = p.text_content(f'#mech-list .card[data-name="{PLUGIN}"]')
    assert "A plugin's paper" in card and "plugin" in card and "✗ noncausal cross" in card
    p.fill("#f-search", "plugin")
    assert [c.strip() for c in page.texts("#mech-list .card h2 a")] == [PLUGIN]
    p = page.open(f"mechanism.html#name={PLUGIN}")
    p.wait_for_selector("#patterns li")
    assert p.text_content("#mech-name") == PLUGIN and p.text_content(".mech-head .family") == "linear"
    assert "“A plugin's paper” (Lab et al., arXiv 2031)" == p.text_content(".mech-head .paper")
    assert p.text_content("#summary") == "Each query reads a running summary of the keys, so the layer carries a fixed-size state."
    assert "A plugin attention: class PluginAttention in module my_lab.attention." == p.text_content("#origin")
    reasons = {li.get_attribute("data-pattern"): li.text_content() for li in p.query_selector_all("#patterns li")}
    assert reasons["noncausal_cross"].endswith("not supported: " + PLUGIN_REASON) and "supported" in reasons["noncausal_self"]
    assert p.is_visible('#patterns li[data-pattern="causal_cross"] .reason')
    row = p.text_content('table.mech-acc[data-pattern="noncausal_self"] tr[data-task="mqar"]')
    assert "n=3" in row and "✱" in row and " of " in row  # its cell, a seed from a dirty tree, its rank
    assert len(p.query_selector_all("#efficiency .plot > svg")) == 2
    legend = page.texts("#efficiency .legend button span")
    assert {PLUGIN, "softmax", "vanilla"} <= set(legend)
    # an unknown name is one line naming the valid choices
    p = page.open("mechanism.html#name=nonesuch")
    p.wait_for_selector("#unknown")
    assert "valid: " in p.text_content("#unknown") and PLUGIN in p.text_content("#unknown")
    assert not page.errors, page.errors


def test_compare_view_from_a_url(page):
    p = page.open("compare.html#names=softmax,linear,based")
    p.wait_for_selector("table.compare")
    assert sorted(p.eval_on_selector_all("#pick input:checked", "els => els.map(e => e.value)")) == ["based", "linear", "softmax"]
    heads = page.texts('table.compare[data-pattern="causal_self"] thead th')
    assert heads[1:4] == ["softmax", "linear", "based"]
    # every non-best number says whether its gap to the best exceeds the spread over seeds
    marks = page.texts('table.compare[data-pattern="causal_self"] .delta')
    assert marks and all(m.startswith(("≠", "≈", "Δ")) for m in marks)
    assert any(m.startswith("≠") for m in marks)
    assert p.query_selector_all('table.compare[data-pattern="causal_self"] td.best')
    assert len(p.query_selector_all("#compare-body .plot > svg")) >= 2
    # a fourth pick is allowed, a fifth is not; the choice is kept in the address
    p.check('#pick input[value="mamba"]')
    assert "names=softmax%2Clinear%2Cbased%2Cmamba" in p.url or "names=softmax,linear,based,mamba" in p.url
    assert p.is_disabled('#pick input[value="performer"]')
    p = page.open("compare.html#names=softmax,nonesuch")
    p.wait_for_selector("#pick-status")
    assert "Unknown mechanism(s) \"nonesuch\"; valid: " in p.text_content("#pick-status")
    assert not page.errors, page.errors


def test_frontier_is_unchanged_by_a_search(page):
    """The Pareto frontier is computed over every point; a search only highlights."""
    p = page.open("cost.html#pattern=causal_self")
    p.wait_for_selector(".task-plot svg")

    def frontier():
        return {t: sorted(p.eval_on_selector_all(f'.task-plot[data-task="{t}"] .frontier-pt title', "els => els.map(e => e.textContent.split('\\n')[0])"))
                for t in p.eval_on_selector_all(".task-plot", "els => els.map(e => e.dataset.task)")}

    before = frontier()
    marks_before = {(tr.query_selector("td").text_content(), tr.get_attribute("data-attention")): tr.query_selector("td.frontier-cell").text_content()
                    for tr in p.query_selector_all("#points-rows tr")}
    assert any(before.values())
    p.fill("#f-search", "performer")
    assert frontier() == before
    rows = p.query_selector_all("#points-rows tr")
    assert rows and all(tr.get_attribute("data-attention") == "performer" for tr in rows)
    for tr in rows:
        assert tr.query_selector("td.frontier-cell").text_content() == marks_before[(tr.query_selector("td").text_content(), "performer")]
    assert p.query_selector_all(".plot.searching g.series.on-search")  # highlighted, not filtered
    # every plot draws the task's chance level and the reference mechanism
    assert p.query_selector_all('.task-plot[data-task="mqar"] line.hline.chance')
    assert p.query_selector_all('.task-plot[data-task="mqar"] line.hline.reference')
    assert p.query_selector_all('.task-plot[data-task="mqar"] path.err')  # error bars over seeds
    assert not page.errors, page.errors


def test_sort_direction_is_visible_announced_and_keyboard_operable(page):
    p = page.open("index.html#pattern=noncausal_self")
    p.wait_for_selector("#rows tr")
    # the default order is visible too: the aggregate, best first
    assert p.get_attribute("#board th.sorted", "data-key") == "agg" and "best first" in p.text_content("#board th.sorted .arrow")
    th = '#board th[data-key="mqar:accuracy"]'
    p.focus(th + " button")
    p.keyboard.press("Enter")
    assert p.get_attribute(th, "aria-sort") == "descending" and p.text_content(th + " .arrow") == "▼ best first"
    assert "best first" in p.text_content("#announce") and "mqar" in p.text_content("#sorted-by")
    p.focus(th + " button")
    p.keyboard.press("Space")
    assert p.get_attribute(th, "aria-sort") == "ascending" and p.text_content(th + " .arrow") == "▲ worst first"
    assert "worst first" in p.text_content("#announce") and "dir=rev" in p.url
    values = [v for v in first_values(page) if v is not None]
    assert values == sorted(values)
    # lower is better: best first is ascending
    p.click('#board th[data-key="forecasting:mse"] button')
    assert p.get_attribute('#board th[data-key="forecasting:mse"]', "aria-sort") == "ascending"
    p.click('#board th[data-key="forecasting:mse"] button')
    # another pattern does not inherit the reversed order
    p.click('#tabs button[data-pattern="causal_self"]')
    p.wait_for_selector("#context b:text-is('causal self')")
    assert p.get_attribute("#board th.sorted", "data-key") == "agg" and "best first" in p.text_content("#board th.sorted .arrow")
    assert "dir=rev" not in p.url
    assert not page.errors, page.errors


def test_weak_cells_and_dirty_runs_are_flagged(page):
    p = page.open("index.html#pattern=noncausal_self&task=mqar")
    p.wait_for_selector("#rows tr")
    # the plugin's mqar cell has a seed from a working tree with uncommitted changes
    cell = p.query_selector(f'#rows tr[data-attention="{PLUGIN}"] td:nth-child(3)')
    assert "✱" in cell.text_content() and "1 of 3" in cell.query_selector(".dirty").get_attribute("title")
    assert "✱" in p.text_content("#keyline")
    # a cell at or below the best trivial baseline says so in words, and only such a cell
    weak = p.query_selector_all("#rows td.weak")
    assert [td.query_selector("xpath=..").get_attribute("data-attention") for td in weak] == ["at_chance"]
    assert weak[0].query_selector(".badge.weak").text_content() == "≤ baseline"
    assert "guess a context value" in weak[0].get_attribute("title")
    p = page.open(f"mechanism.html#name={PLUGIN}")
    p.wait_for_selector("table.mech-acc a.val")
    p.click("table.mech-acc a.val >> nth=0")
    p.wait_for_selector(".card .dirty-run")
    assert "uncommitted changes" in p.text_content(".card .dirty-run")
    assert not page.errors, page.errors


def test_efficiency_directions_come_from_the_records(page):
    """Decode (time per generated token) and distributed records appear through selectors built from
    the records present; the softmax and vanilla baselines stay on the plots whatever the search."""
    p = page.open("efficiency.html")
    p.wait_for_selector("section.pattern svg")
    assert sorted(p.eval_on_selector_all("#f-direction option", "els => els.map(e => e.value)")) == ['"decode"', '"forward"']
    assert p.eval_on_selector("#f-direction", "s => s.value") == '"forward"'
    assert p.eval_on_selector_all("#f-world_size option", "els => els.map(e => e.textContent)") == ["not distributed", "4"]
    p.fill("#f-search", "linear")
    names = set(page.texts('section[data-pattern="causal_self"] .legend button span'))
    assert names == {"softmax", "vanilla", "linear"}
    p.fill("#f-search", "")
    p.select_option("#f-direction", '"decode"')
    p.wait_for_selector("section.pattern .plot svg text.title:text-is('time per generated token')")
    assert "context length" in p.text_content("section.pattern .plot")
    assert "decode" in p.text_content("#context")
    p.select_option("#f-direction", '"forward"')
    p.select_option("#f-world_size", "4")
    p.wait_for_selector("#context b:has-text('world size 4')")
    assert "strategy ring" in p.text_content("#context")
    assert not page.errors, page.errors


def test_zoology_view(page):
    p = page.open("zoology.html#scale=zoo")
    p.wait_for_selector("#zoology-body svg")
    facets = p.eval_on_selector_all(".facet", "els => els.map(e => [e.dataset.seqLen, e.dataset.kv])")
    assert facets == [["64", "4"], ["256", "16"]]
    assert len(p.query_selector_all(".facet line.hline.chance")) == 2
    legend = set(page.texts(".facet .legend button span"))
    assert legend == {"softmax", "linear", "based"}
    assert "sliding_window" in p.text_content(".facet .no-state")
    assert "best of 2 (trainer.lr)" in page.texts("#zoo-points td")
    assert len(p.query_selector_all('.facet[data-seq-len="64"] g.series[data-name="linear"] .pt')) == 2  # two widths
    assert not page.errors, page.errors


def test_copy_button_copies_the_command(browser, site):
    page = Page(browser, site)
    try:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        p = page.open("index.html#pattern=noncausal_self&task=mqar")
        p.wait_for_selector("#rows a.val")
        p.click("#rows a.val >> nth=0")
        p.wait_for_selector(".card .cmd button.copy")
        command = p.text_content(".card pre.command")
        p.click(".card .cmd button.copy >> nth=0")
        p.wait_for_selector(".card button.copy.done, .card button.copy:text('Selected: press Ctrl+C')")
        if p.query_selector(".card button.copy.done"):
            assert p.evaluate("navigator.clipboard.readText()") == command
        assert not page.errors, page.errors
        assert not page.network, page.network
    finally:
        page.context.close()


PAGE_TYPES = [("index.html#pattern=causal_self", "#rows tr"), ("mechanism.html", "#mech-list .card"),
              ("mechanism.html#name=based", "#patterns li"), ("compare.html#names=softmax,linear,based", "table.compare"),
              ("efficiency.html", "section.pattern svg"), ("cost.html#pattern=causal_self", ".task-plot svg"),
              ("zoology.html#scale=zoo", "#zoology-body svg")]


def test_every_page_type_fits_a_phone(browser, site):
    """At 390 px no page scrolls sideways (wide tables scroll inside their own box), the overview's first
    screen shows a number, nothing logs an error, nothing reaches the network, every page has a favicon."""
    page = Page(browser, site, width=390, height=844)
    try:
        run = None
        for path, ready in PAGE_TYPES:
            p = page.open(path)
            p.wait_for_selector(ready)
            width = p.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
            assert p.get_attribute("link[rel=icon]", "href") == "assets/favicon.svg"
            if path.startswith("index"):
                top = p.eval_on_selector("#rows a.val", "a => a.getBoundingClientRect().top")
                assert top < 844, top  # a number on the first screen
                name_width = p.eval_on_selector("#rows td.name", "td => td.getBoundingClientRect().width")
                assert name_width < 150, name_width
                run = p.get_attribute("#rows a.val", "href")
        p = page.open(run)
        p.wait_for_selector(".card pre.command")
        assert p.evaluate("document.documentElement.scrollWidth") <= 390
        assert not page.errors, page.errors
        assert not page.network, page.network
    finally:
        page.context.close()


def test_run_page_shows_the_learning_rate_selection_and_the_curve(browser, tmp_path):
    """A cell trained with `trainer.lr: select`: the selecting seed's page lists every rate tried with
    its validation value and marks the choice; another seed's page links to the run that chose."""
    selecting = train_record("softmax", "mqar", "causal_self", seed=0)
    selecting["lr_selection"] = {"grid": [1e-3, 3e-3, 1e-2], "metric": "accuracy", "split": "validation",
                                 "higher_is_better": True, "chosen": 1e-2,
                                 "candidates": [{"lr": lr, "status": "ok", "validation": v, "test": v, "train_s": 9.0}
                                                for lr, v in ((1e-3, 0.259), (3e-3, 0.9931), (1e-2, 0.9934))]}
    selecting["eval_history"] = [{"step": 100, "accuracy": 0.17}, {"step": 200, "accuracy": 0.82}]
    selecting["eval_history_split"] = "validation"
    other = train_record("softmax", "mqar", "causal_self", seed=1)
    other["lr_selection"] = {"chosen": 1e-2, "selected_by": selecting["run_id"]}
    out = tmp_path / "site"
    leaderboard.build(write_records([selecting, other], tmp_path / "results"), out, warn=lambda m: None)
    p = Page(browser, out)
    q = p.open(f"run.html?ids={selecting['run_id']},{other['run_id']}")
    q.wait_for_selector("table.lr-selection")
    rows = p.texts("table.lr-selection tbody tr")
    assert len(rows) == 3 and "0.01 ✓" in rows[2] and "✓" not in rows[0] + rows[1]
    assert "0.9934" in rows[2] and "validation accuracy: 0.01" in q.text_content("main")
    assert "step 200: 0.82" in p.texts("p.curve")[0] and "validation accuracy" in q.text_content("main")
    q.click(f"a:text-is('run {selecting['run_id']}')")
    q.wait_for_selector("table.lr-selection")
    assert selecting["run_id"] in q.url
    assert not p.errors, p.errors
    assert not p.network, p.network
    p.context.close()
