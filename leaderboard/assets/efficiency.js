/* Efficiency: time and memory against length on log–log axes, one line per attention, OOM and other
 * failed points marked; a table of scaling exponents and CAB's efficiency lengths (the length at
 * which the method becomes cheaper than the quadratic baseline, cab.bench.scaling.efficiency_lengths). */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("efficiency");
  main.appendChild(el("h1", { text: "Efficiency: time and memory against sequence length" }));
  main.appendChild(el("p", { class: "lead", text: "One attention layer measured by `cab bench` on one machine; both axes logarithmic, so a slope of 1 is linear and 2 is quadratic scaling. × marks a length that ran out of memory, timed out or failed." }));
  const context = el("div", { class: "context", id: "context" });
  main.appendChild(context);
  if (!idx.efficiency.length) {
    CAB.context(context, [["scale", "—"], ["hardware", "—"]], idx);
    main.appendChild(el("div", { class: "empty", text: "No efficiency records in this build. Measure some with `cab bench`." }));
    return;
  }
  const PATTERN_TEXT = { noncausal_self: "noncausal self", causal_self: "causal self", noncausal_cross: "noncausal cross", causal_cross: "causal cross" };
  const settingsText = (s) => [s.direction, "batch " + s.batch, s.num_heads + " heads", "dim " + s.dim, s.dtype, s.threads ? s.threads + " threads" : null].filter(Boolean).join(", ");
  const groupSel = el("select", { id: "f-group" }), patSel = el("select", { id: "f-pattern" });
  const search = el("input", { type: "search", id: "f-search", placeholder: "search attentions…", size: 22 });
  const dl = el("span");
  main.appendChild(el("div", { class: "controls" }, el("label", {}, "hardware · settings", groupSel), el("label", {}, "pattern", patSel), search, dl));
  const body = el("div", { id: "eff-body" });
  main.appendChild(body);
  if (!idx.efficiency_lengths_available) {
    main.appendChild(el("div", { class: "warnbox", text: "Efficiency lengths are not shown: this build of cab has no cab.bench.scaling.efficiency_lengths." }));
  }
  const state = CAB.getState();
  let group = null, shownRows = [], shownCols = [];

  async function render() {
    const opts = idx.efficiency.map((g, i) => [String(i), g.hardware + " · " + settingsText(g.settings)]);
    state.group = CAB.fillSelect(groupSel, opts, state.group || "0");
    const meta = idx.efficiency[Number(state.group)];
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
    const baselines = idx.efficiency_baselines.filter((b) => Object.values(group.patterns).some((ls) => ls.some((l) => l.attention === b)));
    for (const [pattern, allLines] of Object.entries(group.patterns)) {
      if (state.pattern && state.pattern !== pattern) continue;
      const lines = allLines.filter((l) => !q || (l.attention + " " + l.variant).toLowerCase().includes(q));
      const section = el("section", { class: "pattern", "data-pattern": pattern });
      section.appendChild(el("h2", { text: PATTERN_TEXT[pattern] || pattern }));
      const name = (l) => l.attention + (l.variant ? " [" + l.variant + "]" : "");
      const series = (key, scaleBy) => lines.filter((l) => l.status === "ok").map((l) => ({
        name: name(l), dashed: idx.efficiency_baselines.includes(l.attention), line: true,
        points: l.points.filter((p) => p.status === "ok" && p[key] !== null && p[key] > 0).map((p) => ({ x: p.length, y: p[key] * scaleBy, href: CAB.runHref([l.run_id]),
          title: name(l) + " at " + p.length + ": " + (key === "time_median_s" ? fmt(p[key] * 1e3) + " ms (IQR " + fmt((p.time_iqr_s || 0) * 1e3) + ")" : CAB.fmtBytes(p[key])) })),
        fails: l.points.filter((p) => p.status !== "ok").map((p) => ({ x: p.length, label: p.status === "oom" ? "OOM" : p.status, title: name(l) + " at " + p.length + ": " + p.status + (p.error ? " — " + p.error : "") })),
      }));
      const plots = el("div", { class: "plots" });
      plots.appendChild(CAB.plot({ title: "forward" + (group.settings.direction === "forward_backward" ? "+backward" : "") + " time", xLabel: "sequence length", yLabel: "time (ms, median)", xLog: true, yLog: true, xBase: 2, series: series("time_median_s", 1e3) }));
      plots.appendChild(CAB.plot({ title: "peak memory", xLabel: "sequence length", yLabel: "peak memory (MiB)", xLog: true, yLog: true, xBase: 2, series: series("peak_memory_bytes", 1 / 1048576) }));
      section.appendChild(plots);

      const cols = [
        { key: "attention", label: "attention", hib: false, v: (l) => name(l) },
        { key: "status", label: "status", hib: false, v: (l) => l.status },
        { key: "time_exponent", label: "time exponent", sub: "↓", hib: false, v: (l) => l.time_exponent, title: "slope of log time against log length (1 = linear, 2 = quadratic)" },
        { key: "memory_exponent", label: "memory exponent", sub: "↓", hib: false, v: (l) => l.memory_exponent, title: "slope of log peak memory against log length" },
        { key: "max_ok", label: "longest ok", sub: "↑", hib: true, v: (l) => Math.max(...l.points.filter((p) => p.status === "ok").map((p) => p.length), -Infinity), title: "longest length measured without OOM, timeout or failure" },
      ];
      if (idx.efficiency_lengths_available) {
        for (const b of baselines) for (const kind of ["time", "memory"]) {
          cols.push({ key: b + ":" + kind, label: kind + " EL", sub: "vs " + b + " ↓", hib: false, el: [b, kind],
            title: "CAB's efficiency length against " + b + " (" + kind + "): the larger root of " + b + "'s quadratic fit minus this attention's linear fit; below it, the measured crossing of the two curves",
            v: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? e[kind].cab_fit : null; },
            crossing: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? e[kind].crossing : null; },
            note: (l) => { const e = (l.efficiency_lengths || {})[b]; return e && e[kind] ? e[kind].crossing_note : null; } });
        }
      }
      const sortCol = cols.find((c) => c.key === state.sort) || cols[2];
      const rows = CAB.sortRows(lines, (l) => { const v = sortCol.v(l); return v === -Infinity ? null : v; }, sortCol.hib, state.dir === "rev");
      const table = el("table", { class: "board eff" },
        el("thead", {}, el("tr", {}, cols.map((c) => el("th", { class: c === sortCol ? "sorted" : null, title: c.title || null, "data-key": c.key,
          onclick: () => { if (c === sortCol) state.dir = state.dir === "rev" ? "" : "rev"; else { state.sort = c.key; state.dir = ""; } draw(); CAB.setState(state); } },
        c.label, c.sub ? el("span", { class: "dir", text: c.sub }) : null)))),
        el("tbody", {}, rows.map((l) => el("tr", {}, cols.map((c) => {
          if (c.key === "attention") return el("td", {}, el("a", { href: CAB.runHref([l.run_id]), text: name(l) }));
          if (c.key === "status") return el("td", { title: l.note || null }, badge(l.status, l.note), l.note ? el("span", { class: "why", text: l.note }) : null);
          const v = c.v(l), missing = (x) => x === null || x === undefined || x === -Infinity;
          if (c.crossing) {
            const x = c.crossing(l), note = c.note(l);
            // no crossing: cheaper already at the shortest length measured, or still dearer at the longest
            const xs = !missing(x) ? fmt(Math.round(x), 6) : note ? (note.side === "below" ? "< " : "> ") + note.length : "n/a";
            const title = !missing(x) ? "the measured curves cross at " + xs : note ? (note.side === "below" ? "cheaper than the baseline at every length measured" : "not cheaper than the baseline at the longest length measured") : "too few common lengths to compare";
            return el("td", { title }, missing(v) ? "—" : fmt(Math.round(v), 6), el("span", { class: "pm", text: " · crossing " + xs }));
          }
          return el("td", { text: missing(v) ? "—" : c.key.startsWith("max") ? String(v) : fmt(v, 3) });
        })))));
      section.appendChild(el("div", { class: "tablewrap", style: "border-top:1px solid #dde2ea;max-height:none" }, table));
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

  CAB.downloadButtons(dl, () => ("cab-efficiency-" + group.hardware + (state.pattern ? "-" + state.pattern : "")).replace(/[^A-Za-z0-9_.-]+/g, "_"),
    () => [[{ key: "pattern", label: "pattern" }, { key: "hardware", label: "hardware" }, ...shownCols.flatMap((c) => { const label = c.label + (c.sub ? " " + c.sub.replace(/[↑↓]/g, "").trim() : "");
      return c.crossing ? [{ key: c.key, label }, { key: c.key + ":crossing", label: label.replace("EL", "crossing") }] : [{ key: c.key, label }]; }), { key: "run_id", label: "run_id" }], shownRows]);
  groupSel.addEventListener("change", () => { state.group = groupSel.value; state.pattern = ""; render(); });
  patSel.addEventListener("change", () => { state.pattern = patSel.value; draw(); CAB.setState(state); });
  search.addEventListener("input", () => { state.q = search.value; draw(); CAB.setState(state); });
  window.addEventListener("hashchange", () => { for (const k of Object.keys(state)) delete state[k]; Object.assign(state, CAB.getState()); render(); });
  render().catch((e) => body.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })));
})();
