/* Efficiency: time and memory against length on log–log axes, one line per attention, the `softmax`
 * and `vanilla` baselines always drawn (a search narrows the others, never them), failed lengths in
 * a strip above each plot; a table of scaling exponents and CAB's efficiency lengths
 * (cab.bench.scaling.efficiency_lengths).
 *
 * Directions and settings are read from the records: a selector appears for every setting that
 * varies between the efficiency groups of a machine (direction: forward, forward_backward, decode;
 * world size and strategy of distributed runs; batch, heads, ...), so new kinds of efficiency record
 * show up without work here. */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("efficiency");
  main.appendChild(el("h1", { text: "Efficiency: time and memory against sequence length" }));
  main.appendChild(el("p", { class: "lead", text: "One attention layer measured by `cab bench` on one machine; both axes logarithmic, so a slope of 1 is linear and 2 is quadratic scaling. The dark dashed lines are the softmax and vanilla baselines, always drawn. Bars: the interquartile range of the repeats. Failed lengths (out of memory, timeout) are marked in the strip above each plot." }));
  const context = el("div", { class: "context", id: "context" });
  main.appendChild(context);
  if (!idx.efficiency.length) {
    CAB.context(context, [["scale", "—"], ["hardware", "—"]], idx);
    main.appendChild(el("div", { class: "empty", text: "No efficiency records in this build. Measure some with `cab bench`." }));
    return;
  }
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const BASELINE_STYLE = { softmax: { color: "#1d2433", dash: "7 3", marker: "square" }, vanilla: { color: "#6b7280", dash: "3 3", marker: "diamond" } };
  const DIRECTIONS = {
    forward: { label: "forward", title: "forward time", x: "sequence length", y: "time (ms, median)" },
    forward_backward: { label: "forward + backward", title: "forward + backward time", x: "sequence length", y: "time (ms, median)" },
    backward: { label: "backward", title: "backward time", x: "sequence length", y: "time (ms, median)" },
    decode: { label: "decode (per generated token)", title: "time per generated token", x: "context length", y: "ms per token (median)" },
  };
  const direction = (d) => DIRECTIONS[d] || { label: d || "unspecified", title: (d || "") + " time", x: "length", y: "time (ms, median)" };
  // settings keys in the order their selectors appear; any other key a record adds comes after
  const ORDER = ["direction", "world_size", "strategy", "mode", "batch", "num_heads", "dim", "dtype", "threads"];
  const SETTING_TEXT = { direction: "direction", world_size: "world size", strategy: "strategy", mode: "mode", batch: "batch", num_heads: "heads", dim: "width", dtype: "dtype", threads: "threads" };
  const settingValue = (k, v) => (k === "direction" ? direction(v).label : v === null || v === undefined ? "not distributed" : String(v));
  const settingsText = (s) => Object.keys(s).filter((k) => s[k] !== null && s[k] !== undefined).sort((a, b) => order(a) - order(b))
    .map((k) => (k === "direction" ? direction(s[k]).label : SETTING_TEXT[k] ? SETTING_TEXT[k] + " " + s[k] : k + " " + s[k])).join(", ");
  const order = (k) => (ORDER.includes(k) ? ORDER.indexOf(k) : ORDER.length);

  const hwSel = el("select", { id: "f-hardware" }), patSel = el("select", { id: "f-pattern" });
  const settingBox = el("span", { class: "settings-selectors", style: "display:contents" });
  const search = el("input", { type: "search", id: "f-search", placeholder: "search attentions…", size: 18, "aria-label": "search attentions" });
  const dl = el("span", { class: "dl" });
  main.appendChild(el("div", { class: "controls" }, el("label", {}, "hardware", hwSel), settingBox, el("label", {}, "pattern", patSel), search, dl));
  const body = el("div", { id: "eff-body" });
  main.appendChild(body);
  if (!idx.efficiency_lengths_available) {
    main.appendChild(el("div", { class: "warnbox", text: "Efficiency lengths are not shown: this build of cab has no cab.bench.scaling.efficiency_lengths." }));
  }
  const full = CAB.fullData(idx);
  if (full) main.appendChild(full);
  const state = CAB.getState();
  let group = null, shownRows = [], shownCols = [];

  /** The group the selectors point at: hardware first, then each varying setting in order. */
  function chooseGroup() {
    const hws = [...new Set(idx.efficiency.map((g) => g.hardware))];
    state.hw = CAB.fillSelect(hwSel, hws, state.hw);
    let pool = idx.efficiency.map((g, i) => Object.assign({ i }, g)).filter((g) => g.hardware === state.hw);
    const keys = [...new Set(pool.flatMap((g) => Object.keys(g.settings)))].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
    settingBox.textContent = "";
    for (const k of keys) {
      // options in a reading order: the plain run (no value) first, then numbers up, then names
      const rank = (v) => { const x = JSON.parse(v); return x === null ? [0, 0, ""] : typeof x === "number" ? [1, x, ""] : [2, 0, String(x)]; };
      const values = [...new Set(pool.map((g) => JSON.stringify(g.settings[k] === undefined ? null : g.settings[k])))]
        .sort((a, b) => { const [x, y] = [rank(a), rank(b)]; return x[0] - y[0] || x[1] - y[1] || x[2].localeCompare(y[2]); });
      if (values.length < 2) continue;
      const sel = el("select", { id: "f-" + k, "data-setting": k });
      // the default view: a forward pass, and a plain run (no distributed setting) where there are ones
      const fallback = k === "direction" ? (values.includes('"forward"') ? '"forward"' : undefined) : values.includes("null") ? "null" : undefined;
      const picked = CAB.fillSelect(sel, values.map((v) => [v, settingValue(k, JSON.parse(v))]), state[k] !== undefined ? JSON.stringify(parseMaybe(state[k])) : fallback);
      state[k] = String(JSON.parse(picked));
      sel.addEventListener("change", () => { state[k] = String(JSON.parse(sel.value)); render(); });
      settingBox.appendChild(el("label", {}, SETTING_TEXT[k] || k, sel));
      pool = pool.filter((g) => JSON.stringify(g.settings[k] === undefined ? null : g.settings[k]) === picked);
    }
    return pool[0];
  }
  function parseMaybe(v) { try { return JSON.parse(v); } catch (e) { return v; } }

  async function render() {
    const meta = chooseGroup();
    group = await CAB.load("data/" + meta.file + ".js", meta.file);
    state.pattern = CAB.fillSelect(patSel, [["", "all patterns"], ...Object.keys(group.patterns).map((p) => [p, PATTERN_TEXT[p] || p])], state.pattern || "");
    search.value = state.q || "";
    CAB.context(context, [["scale", group.scale], ["hardware", group.hardware], ["settings", settingsText(group.settings)]], idx);
    draw();
    CAB.setState(state);
  }

  function draw() {
    body.textContent = "";
    shownRows = [];
    const q = (state.q || "").toLowerCase();
    const baselines = idx.efficiency_baselines;
    const dir = direction(group.settings.direction);
    const forwardLike = !group.settings.direction || ["forward", "forward_backward", "backward"].includes(group.settings.direction);
    for (const [pattern, allLines] of Object.entries(group.patterns)) {
      if (state.pattern && state.pattern !== pattern) continue;
      const isBase = (l) => baselines.includes(l.attention) && !l.variant;
      // a search narrows the mechanisms; the baselines they are measured against always stay
      const lines = allLines.filter((l) => isBase(l) || !q || (l.attention + " " + l.variant).toLowerCase().includes(q));
      const section = el("section", { class: "pattern", "data-pattern": pattern });
      section.appendChild(el("h2", { text: PATTERN_TEXT[pattern] || pattern }));
      const name = (l) => l.attention + (l.variant ? " [" + l.variant + "]" : "");
      const ordered = lines.filter((l) => l.status === "ok").sort((a, b) => (isBase(b) ? 1 : 0) - (isBase(a) ? 1 : 0));
      const series = (key, scaleBy) => ordered.map((l, i) => Object.assign({
        name: name(l), baseline: isBase(l), line: true,
        points: l.points.filter((p) => p.status === "ok" && p[key] !== null && p[key] > 0).map((p) => {
          const iqr = key === "time_median_s" && p.time_iqr_s ? p.time_iqr_s * scaleBy : null;
          return { x: p.length, y: p[key] * scaleBy, yLo: iqr !== null ? p[key] * scaleBy - iqr / 2 : null, yHi: iqr !== null ? p[key] * scaleBy + iqr / 2 : null,
            href: CAB.runHref([l.run_id]),
            title: name(l) + " at " + p.length + ": " + (key === "time_median_s" ? fmt(p[key] * 1e3) + " ms (IQR " + fmt((p.time_iqr_s || 0) * 1e3) + " ms)" : CAB.fmtBytes(p[key])) };
        }),
        fails: l.points.filter((p) => p.status !== "ok").map((p) => ({ x: p.length, label: p.status === "oom" ? "OOM" : p.status, title: name(l) + (p.error ? " (" + p.error + ")" : "") })),
      }, isBase(l) ? BASELINE_STYLE[l.attention] || {} : CAB.styleOf(i)));
      const plots = el("div", { class: "plots" });
      const width = CAB.plotWidth(main, 2);
      plots.appendChild(CAB.plot({ title: dir.title, xLabel: dir.x, yLabel: dir.y, xLog: true, yLog: true, xBase: 2, width, series: series("time_median_s", 1e3) }));
      plots.appendChild(CAB.plot({ title: "peak memory", xLabel: dir.x, yLabel: "peak memory (MiB)", xLog: true, yLog: true, xBase: 2, width, series: series("peak_memory_bytes", 1 / 1048576) }));
      section.appendChild(plots);

      const cols = [
        { key: "attention", label: "attention", hib: false, string: true, v: (l) => name(l) },
        { key: "status", label: "status", hib: false, string: true, v: (l) => l.status },
        { key: "time_exponent", label: "time exponent", sub: "↓", hib: false, v: (l) => l.time_exponent, title: "slope of log time against log length (1 = linear, 2 = quadratic)" },
        { key: "memory_exponent", label: "memory exponent", sub: "↓", hib: false, v: (l) => l.memory_exponent, title: "slope of log peak memory against log length" },
        { key: "max_ok", label: "longest ok", sub: "↑", hib: true, v: (l) => Math.max(...l.points.filter((p) => p.status === "ok").map((p) => p.length), -Infinity), title: "longest length measured without OOM, timeout or failure" },
      ];
      const present = baselines.filter((b) => allLines.some((l) => l.attention === b));
      if (idx.efficiency_lengths_available) {
        for (const b of present) for (const kind of ["time", "memory"]) {
          cols.push({ key: b + ":" + kind, label: kind + (forwardLike ? " EL" : " crossing"), sub: "vs " + b + " ↓", hib: false, el: [b, kind],
            title: forwardLike ? "CAB's efficiency length against " + b + " (" + kind + "): the larger root of " + b + "'s quadratic fit minus this attention's linear fit; below it, the measured crossing of the two curves"
              : "where the measured " + kind + " curve crosses " + b + "'s (CAB's quadratic fit is for forward passes only)",
            v: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? (forwardLike ? e[kind].cab_fit : e[kind].crossing) : null; },
            crossing: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? e[kind].crossing : null; },
            note: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? e[kind].crossing_note : null; } });
        }
      }
      const sortCol = cols.find((c) => c.key === state.sort) || cols[2];
      const reversed = state.dir === "rev";
      const rows = CAB.sortRows(lines, (l) => { const v = sortCol.v(l); return v === -Infinity ? null : v; }, sortCol.hib, reversed);
      const table = el("table", { class: "board eff" },
        el("thead", {}, el("tr", {}, cols.map((c) => CAB.sortHeader({ label: c.label, sub: c.sub, key: c.key, hib: c.hib, string: c.string, title: c.title,
          sorted: c === sortCol ? (reversed ? "reversed" : "best") : null,
          onSort: () => { if (c === sortCol) state.dir = reversed ? "" : "rev"; else { state.sort = c.key; state.dir = ""; } draw(); CAB.setState(state);
            CAB.announce("sorted by " + c.label + ", " + (state.dir === "rev" ? "reversed" : "best first")); } })))),
        el("tbody", {}, rows.map((l) => el("tr", { class: isBase(l) ? "baseline-row" : null }, cols.map((c) => {
          if (c.key === "attention") return el("td", { class: "name" }, el("a", { class: "mech", href: CAB.mechHref(l.attention), text: name(l) }),
            isBase(l) ? el("span", { class: "reftag", text: "baseline" }) : null, " ", el("a", { href: CAB.runHref([l.run_id]), class: "runlink", title: "the run", text: "run" }),
            CAB.dirtyMark(l.dirty ? 1 : 0, 1));
          if (c.key === "status") return el("td", { title: l.note || null }, badge(l.status, l.note), l.note ? el("span", { class: "why", text: l.note }) : null);
          const v = c.v(l), missing = (x) => x === null || x === undefined || x === -Infinity;
          if (c.crossing) {
            const x = c.crossing(l), note = c.note(l);
            // no crossing: cheaper already at the shortest length measured, or still dearer at the longest
            const xs = !missing(x) ? fmt(Math.round(x), 6) : note ? (note.side === "below" ? "< " : "> ") + note.length : "n/a";
            const title = !missing(x) ? "the measured curves cross at " + xs : note ? (note.side === "below" ? "cheaper than the baseline at every length measured" : "not cheaper than the baseline at the longest length measured") : "too few common lengths to compare";
            return el("td", { title }, missing(v) ? "—" : fmt(Math.round(v), 6), forwardLike ? el("span", { class: "pm", text: " · crossing " + xs }) : null);
          }
          return el("td", { text: missing(v) ? "—" : c.key.startsWith("max") ? String(v) : fmt(v, 3) });
        })))));
      section.appendChild(CAB.scrollBox(table));
      if (!lines.length) section.appendChild(el("div", { class: "empty", text: "No attention matches." }));
      body.appendChild(section);
      shownCols = cols;
      for (const l of rows) {
        const o = { pattern, hardware: group.hardware, run_id: l.run_id };
        for (const c of cols) {
          const v = c.v(l); o[c.key] = v === -Infinity ? null : v;
          if (c.crossing) o[c.key + ":crossing"] = c.crossing(l);
        }
        shownRows.push(o);
      }
    }
  }

  CAB.downloadButtons(dl, () => ("cab-efficiency-" + group.hardware + "-" + (group.settings.direction || "") + (state.pattern ? "-" + state.pattern : "")).replace(/[^A-Za-z0-9_.-]+/g, "_"),
    () => [[{ key: "pattern" }, { key: "hardware" }, ...shownCols.flatMap((c) => (c.crossing ? [{ key: c.key }, { key: c.key + ":crossing" }] : [{ key: c.key }])), { key: "run_id" }], shownRows]);
  hwSel.addEventListener("change", () => { state.hw = hwSel.value; state.pattern = ""; render(); });
  patSel.addEventListener("change", () => { state.pattern = patSel.value; draw(); CAB.setState(state); });
  search.addEventListener("input", () => { state.q = search.value; draw(); CAB.setState(state); });
  window.addEventListener("hashchange", () => { for (const k of Object.keys(state)) delete state[k]; Object.assign(state, CAB.getState()); render(); });
  CAB.onResize(() => { if (group) draw(); });
  render().catch((e) => body.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })));
})();
