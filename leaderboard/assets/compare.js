/* Compare: two to four mechanisms side by side, shareable as compare.html#names=a,b,c.
 * Accuracy: per pattern, one row per task, each mechanism's mean ± std over seeds (n); the best of
 * the row in bold, and for each other its difference to the best, marked ≠ where the difference
 * exceeds the spread (the two mean ± std intervals do not overlap) and ≈ where it is inside it.
 * Efficiency: their time and memory curves on one plot per pattern, with softmax and vanilla. */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("compare");
  const list = await CAB.mechanisms().catch(() => null);
  main.appendChild(el("h1", { text: "Compare mechanisms" }));
  if (!list || list.length < 2) {
    main.appendChild(el("div", { class: "empty", text: "Fewer than two mechanisms in this build: nothing to compare." }));
    return;
  }
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const MAX = 4;
  main.appendChild(el("p", { class: "lead", text: "Pick two to four mechanisms. Cells: mean ± standard deviation over seeds (n). In each row the best is bold; another's difference to it is marked ≠ when it exceeds the spread (the mean ± std intervals do not overlap) and ≈ when it is within it. The address keeps the choice, so the view can be shared." }));
  let state = CAB.getState();
  const filter = el("input", { type: "search", id: "f-filter", placeholder: "filter the list…", size: 16, "aria-label": "filter mechanisms" });
  const pick = el("div", { class: "pick", id: "pick", role: "group", "aria-label": "mechanisms to compare" });
  const status = el("p", { class: "muted", id: "pick-status" });
  const whereSel = el("select", { id: "f-where" }), effSel = el("select", { id: "f-eff" });
  const controls = el("div", { class: "controls" }, filter, el("label", {}, "scale · hardware", whereSel), el("label", {}, "efficiency measured on", effSel));
  const body = el("div", { id: "compare-body" });
  main.append(controls, pick, status, body);

  function selected() {
    return (state.names || "").split(",").map((s) => s.trim()).filter(Boolean);
  }
  function drawPicker() {
    pick.textContent = "";
    const names = selected();
    const q = (filter.value || "").toLowerCase();
    for (const m of list) {
      if (q && !m.name.toLowerCase().includes(q) && !names.includes(m.name)) continue;
      const box = el("input", { type: "checkbox", value: m.name, "data-name": m.name });
      box.checked = names.includes(m.name);
      box.disabled = !box.checked && names.length >= MAX;
      box.addEventListener("change", () => {
        const now = selected().filter((n) => n !== m.name);
        if (box.checked) now.push(m.name);
        state.names = now.join(",");
        CAB.setState(state);
        draw();
      });
      pick.appendChild(el("label", {}, box, " " + m.name));
    }
  }

  async function draw() {
    drawPicker();
    body.textContent = "";
    const names = selected();
    const unknown = names.filter((n) => !list.some((m) => m.name === n));
    if (unknown.length) {
      status.textContent = "Unknown mechanism(s) " + unknown.map((n) => JSON.stringify(n)).join(", ") + "; valid: " + list.map((m) => m.name).join(", ") + ".";
      return;
    }
    if (names.length < 2) { status.textContent = "Pick at least two mechanisms (" + names.length + " picked)."; return; }
    if (names.length > MAX) { status.textContent = "At most " + MAX + " mechanisms: showing the first " + MAX + "."; }
    else status.textContent = names.length + " picked: " + names.join(", ") + ".";
    const mechs = await Promise.all(names.slice(0, MAX).map((n) => CAB.mechanism(list.find((m) => m.name === n).file)));
    // where: the scale × hardware groups any of them has
    const wheres = [...new Set(mechs.flatMap((m) => m.accuracy.map((g) => g.scale + " · " + g.hardware)))];
    state.where = CAB.fillSelect(whereSel, wheres.length ? wheres : [["", "—"]], state.where);
    const effs = [];
    for (const m of mechs) for (const g of m.efficiency) if (!effs.some((e) => e.group === g.group)) effs.push(g);
    // the default: where most of them were measured, a plain forward pass first
    const plain = (g) => (g.settings.direction === "forward" || !g.settings.direction ? 0 : 1) + (g.settings.world_size || g.settings.strategy ? 1 : 0);
    const count = (g) => mechs.filter((m) => m.efficiency.some((x) => x.group === g.group)).length;
    effs.sort((a, b) => count(b) - count(a) || plain(a) - plain(b) || a.group - b.group);
    const settingsText = (s) => Object.entries(s).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => k + " " + v).join(", ");
    state.eff = CAB.fillSelect(effSel, effs.length ? effs.map((g) => [String(g.group), g.hardware + " · " + settingsText(g.settings)]) : [["", "—"]], state.eff);
    CAB.setState(state);
    drawAccuracy(mechs);
    drawEfficiency(mechs, effs);
  }

  function drawAccuracy(mechs) {
    body.appendChild(el("h2", { text: "Accuracy" }));
    const groups = mechs.map((m) => m.accuracy.find((g) => g.scale + " · " + g.hardware === state.where));
    if (!groups.some(Boolean)) { body.appendChild(el("p", { class: "muted", text: "No training records for these mechanisms here." })); return; }
    for (const p of CAB.PATTERNS) {
      const tasks = [...new Set(groups.flatMap((g) => (g && g.patterns[p] ? Object.keys(g.patterns[p]) : [])))].sort();
      if (!tasks.length) continue;
      const rows = tasks.map((task) => {
        const cols = groups.map((g) => g && g.patterns[p] && g.patterns[p][task]);
        const info = cols.find(Boolean);
        // each mechanism's best setting in this column
        const cells = cols.map((col) => {
          if (!col) return null;
          const ok = col.rows.filter((r) => r.status === "ok" && r.value);
          if (!ok.length) return col.rows[0];
          return ok.reduce((a, b) => ((info.hib ? b.value[0] > a.value[0] : b.value[0] < a.value[0]) ? b : a));
        });
        const scored = cells.map((c, i) => [c, i]).filter(([c]) => c && c.status === "ok" && c.value);
        const best = scored.length ? scored.reduce((a, b) => ((info.hib ? b[0].value[0] > a[0].value[0] : b[0].value[0] < a[0].value[0]) ? b : a)) : null;
        const tds = cells.map((c, i) => {
          if (!c) return el("td", { class: "num" }, badge("notrun", "no record"));
          if (c.status !== "ok" || !c.value) return el("td", { class: "num" }, el("a", { href: CAB.runHref(c.runs) }, badge(c.status, c.note)), c.note ? el("span", { class: "why", text: c.note }) : null);
          const [mt, st] = CAB.fmtMeanStd(c.value[0], c.value[1]);
          let mark = null;
          if (best && best[1] !== i) {
            const [bm, bs, bn] = best[0].value, [cm, cs, cn] = c.value;
            const diff = cm - bm;
            if (bn < 2 || cn < 2 || bs === null || cs === null) mark = el("span", { class: "delta same", title: "one seed: no spread to compare with", text: "Δ " + fmt(diff, 3) + " (n=1, no spread)" });
            else if (Math.abs(diff) > bs + cs) mark = el("span", { class: "delta sig", title: "the difference exceeds the spread: the mean ± std intervals do not overlap", text: "≠ Δ " + fmt(diff, 3) });
            else mark = el("span", { class: "delta same", title: "within the spread over seeds: the mean ± std intervals overlap", text: "≈ Δ " + fmt(diff, 3) });
          }
          return el("td", { class: "num" + (best && best[1] === i ? " best" : ""), "data-attention": mechs[i].name },
            el("a", { class: "val", href: CAB.runHref(c.runs), text: mt + (st !== null ? " ± " + st : "") }), el("span", { class: "n", text: " n=" + c.value[2] }),
            CAB.dirtyMark(c.dirty, c.runs.length), mark ? el("span", { class: "delta-line" }, mark) : null);
        });
        const bestBase = Object.entries(info.baselines).reduce((b, [label, v]) => (!b || (info.hib ? v > b[1] : v < b[1]) ? [label, v] : b), null);
        return el("tr", { "data-task": task }, el("td", { class: "name" }, el("span", { text: task }), el("span", { class: "variant", text: info.metric + (info.hib ? " ↑" : " ↓") })),
          ...tds, el("td", { class: "num", text: bestBase ? fmt(bestBase[1]) + " " + bestBase[0] : "—" }),
          el("td", { title: info.gate.reason }, el("span", { class: "badge gate " + info.gate.status, text: info.gate.status.replace("_", " ") })));
      });
      body.appendChild(el("h3", { text: PATTERN_TEXT[p] || p }));
      body.appendChild(CAB.scrollBox(el("table", { class: "board compare", "data-pattern": p },
        el("thead", {}, el("tr", {}, el("th", { text: "task", scope: "col" }), mechs.map((m) => el("th", { scope: "col" }, el("a", { href: CAB.mechHref(m.name), text: m.name }))),
          el("th", { text: "best baseline", scope: "col" }), el("th", { text: "column", scope: "col" }))),
        el("tbody", {}, rows))));
    }
  }

  function drawEfficiency(mechs, effs) {
    body.appendChild(el("h2", { text: "Efficiency" }));
    const g0 = effs.find((g) => String(g.group) === state.eff);
    if (!g0) { body.appendChild(el("p", { class: "muted", text: "No efficiency records for these mechanisms." })); return; }
    const BASE = { softmax: { color: "#1d2433", dash: "7 3", marker: "square" }, vanilla: { color: "#6b7280", dash: "3 3", marker: "diamond" } };
    const decode = g0.settings.direction === "decode";
    const patterns = [...new Set(mechs.flatMap((m) => m.efficiency.filter((g) => g.group === g0.group).flatMap((g) => Object.keys(g.patterns))))];
    for (const p of CAB.PATTERNS.filter((x) => patterns.includes(x))) {
      const lines = new Map();
      mechs.forEach((m) => {
        const g = m.efficiency.find((x) => x.group === g0.group);
        for (const l of (g && g.patterns[p]) || []) {
          const k = l.attention + "\u0000" + l.variant;
          if (!lines.has(k) && (l.attention === m.name || BASE[l.attention])) lines.set(k, l);
        }
      });
      const chosen = new Set(mechs.map((m) => m.name));
      const ordered = [...lines.values()].filter((l) => l.status === "ok").sort((a, b) => (chosen.has(b.attention) ? 1 : 0) - (chosen.has(a.attention) ? 1 : 0));
      const name = (l) => l.attention + (l.variant ? " [" + l.variant + "]" : "");
      const series = (key, k) => ordered.map((l, j) => Object.assign({ name: name(l), line: true, baseline: !chosen.has(l.attention),
        points: l.points.filter((q) => q.status === "ok" && q[key] > 0).map((q) => {
          const iqr = key === "time_median_s" && q.time_iqr_s ? q.time_iqr_s * k : null;  // bars: the repeats' interquartile range
          return { x: q.length, y: q[key] * k, yLo: iqr !== null ? q[key] * k - iqr / 2 : null, yHi: iqr !== null ? q[key] * k + iqr / 2 : null,
            href: CAB.runHref([l.run_id]), title: name(l) + " at " + q.length + ": " + (key === "time_median_s" ? fmt(q[key] * 1e3) + " ms" : CAB.fmtBytes(q[key])) };
        }),
        fails: l.points.filter((q) => q.status !== "ok").map((q) => ({ x: q.length, label: q.status === "oom" ? "OOM" : q.status, title: name(l) })) },
      chosen.has(l.attention) ? CAB.styleOf(j) : BASE[l.attention] || {}));
      const width = CAB.plotWidth(main, 2);
      body.appendChild(el("h3", { text: PATTERN_TEXT[p] || p }));
      body.appendChild(el("div", { class: "plots" },
        CAB.plot({ title: decode ? "time per generated token" : "time", xLabel: decode ? "context length" : "sequence length", yLabel: decode ? "ms per token" : "time (ms)", xLog: true, yLog: true, xBase: 2, width, series: series("time_median_s", 1e3) }),
        CAB.plot({ title: "peak memory", xLabel: decode ? "context length" : "sequence length", yLabel: "MiB", xLog: true, yLog: true, xBase: 2, width, series: series("peak_memory_bytes", 1 / 1048576) })));
    }
  }

  filter.addEventListener("input", drawPicker);
  whereSel.addEventListener("change", () => { state.where = whereSel.value; CAB.setState(state); draw(); });
  effSel.addEventListener("change", () => { state.eff = effSel.value; CAB.setState(state); draw(); });
  window.addEventListener("hashchange", () => { state = CAB.getState(); draw(); });
  CAB.onResize(() => draw());
  draw().catch((e) => body.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })));
})();
