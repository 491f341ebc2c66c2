/* Accuracy versus cost: per task and pattern, the primary metric against forward FLOPs per example,
 * wall time, training throughput or (MQAR, recurrent forms) state size. The Pareto frontier (no other
 * attention is both better and cheaper) is computed over every point, whatever the search: a search
 * only highlights its matches. Error bars: ± the standard deviation over seeds. Horizontal lines:
 * the task's trivial baselines and the reference mechanism (softmax). After LRA's
 * performance-vs-speed scatter and MTEB's Pareto flags. */
"use strict";
(async function () {
  const { el, fmt } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("cost");
  main.appendChild(el("h1", { text: "Accuracy versus cost" }));
  main.appendChild(el("p", { class: "lead", text: "Each point is one attention (mean over finished seeds, bars ± one standard deviation). Filled points joined by the dashed line form the Pareto frontier over all attentions: no other is at least as good for less cost. A search highlights its matches and never changes the frontier. Red dashed line: the best trivial baseline (chance); dark dashed: softmax, the reference. Click a point for its runs." }));
  const context = el("div", { class: "context", id: "context" });
  main.appendChild(context);
  if (!idx.tables.length) {
    CAB.context(context, [["scale", "—"], ["hardware", "—"]], idx);
    main.appendChild(el("div", { class: "empty", text: "No training records in this build." }));
    return;
  }
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const AXES = {
    flops_per_example: { label: "forward FLOPs per example", hib: false, f: CAB.fmtCount },
    wall_s: { label: "wall time of the run (s)", hib: false },
    tokens_per_second: { label: "training tokens per second", hib: true, f: CAB.fmtCount },
    state_size: { label: "recurrent state size (numbers)", hib: false, f: CAB.fmtCount },
  };
  const scaleSel = el("select", { id: "f-scale" }), hwSel = el("select", { id: "f-hardware" }), patSel = el("select", { id: "f-pattern" });
  const taskSel = el("select", { id: "f-task" }), axisSel = el("select", { id: "f-axis" });
  const search = el("input", { type: "search", id: "f-search", placeholder: "highlight attentions…", size: 18, "aria-label": "highlight attentions" });
  const dl = el("span", { class: "dl" });
  main.appendChild(el("div", { class: "controls" }, el("label", {}, "scale", scaleSel), el("label", {}, "hardware", hwSel), el("label", {}, "pattern", patSel),
    el("label", {}, "task", taskSel), el("label", {}, "cost", axisSel), search, dl));
  const body = el("div", { id: "cost-body" });
  main.appendChild(body);
  const full = CAB.fullData(idx);
  if (full) main.appendChild(full);
  const state = Object.assign({ axis: "flops_per_example" }, CAB.getState());
  let table = null, shown = [];

  async function render() {
    const scales = [...new Set(idx.tables.map((t) => t.scale))];
    state.scale = CAB.fillSelect(scaleSel, scales, state.scale);
    state.hw = CAB.fillSelect(hwSel, [...new Set(idx.tables.filter((t) => t.scale === state.scale).map((t) => t.hardware))], state.hw);
    const here = idx.tables.filter((t) => t.scale === state.scale && t.hardware === state.hw);
    state.pattern = CAB.fillSelect(patSel, here.map((t) => [t.pattern, PATTERN_TEXT[t.pattern] || t.pattern]), state.pattern);
    const meta = here.find((t) => t.pattern === state.pattern);
    table = await CAB.load("data/" + meta.file + ".js", meta.file);
    state.task = CAB.fillSelect(taskSel, [["", "all tasks"], ...Object.keys(table.tasks)], state.task || "");
    const axes = Object.keys(AXES).filter((k) => table.cells.some((c) => c.cost && c.cost[k] !== undefined));
    state.axis = CAB.fillSelect(axisSel, axes.map((k) => [k, AXES[k].label]), state.axis);
    search.value = state.q || "";
    CAB.context(context, [["scale", table.scale], ["hardware", table.hardware], ["pattern", PATTERN_TEXT[table.pattern] || table.pattern]], idx);
    draw();
    CAB.setState(state);
  }

  function draw() {
    body.textContent = "";
    shown = [];
    const rows = new Map(table.rows.map((r) => [r.id, r]));
    const q = (state.q || "").toLowerCase();
    const axis = AXES[state.axis] || AXES.flops_per_example;
    const plots = el("div", { class: "plots" });
    const tb = el("tbody", { id: "points-rows" });
    const name = (r) => r.attention + (r.variant ? " [" + r.variant + "]" : "");
    const matches = (r) => !q || name(r).toLowerCase().includes(q);
    const width = CAB.plotWidth(main, 2);
    for (const [task, info] of Object.entries(table.tasks)) {
      if (state.task && state.task !== task) continue;
      const m = info.primary_metric, hib = (info.metric_info[m] || { higher_is_better: true }).higher_is_better;
      const pts = [];
      for (const c of table.cells) {
        const r = rows.get(c.row);
        if (c.task !== task || c.status !== "ok" || !c.metrics[m] || !c.cost || !(c.cost[state.axis] > 0)) continue;
        pts.push({ x: c.cost[state.axis], y: c.metrics[m][0], std: c.metrics[m][1], n: c.metrics[m][2], row: r, cell: c, hit: matches(r) });
      }
      // the frontier of every point: searching never changes which points are on it
      const front = new Set(CAB.pareto(pts, hib, axis.hib));
      const series = pts.map((p, i) => Object.assign({ name: name(p.row), highlight: q ? p.hit : false, points: [{
        x: p.x, y: p.y, yLo: p.std !== null ? p.y - p.std : null, yHi: p.std !== null ? p.y + p.std : null, frontier: front.has(p),
        href: CAB.runHref(p.cell.runs.map((x) => x[0])),
        title: name(p.row) + "\n" + m + " " + CAB.fmtMeanStd(p.y, p.std).filter((x) => x !== null).join(" ± ") + " (n=" + p.n + ")\n" + axis.label + ": " + (axis.f ? axis.f(p.x) : fmt(p.x)) + (front.has(p) ? "\non the Pareto frontier" : "") }] },
      CAB.styleOf(i)));
      const frontier = [...front].sort((a, b) => a.x - b.x).map((p) => ({ x: p.x, y: p.y }));
      const hlines = [];
      let bestRef = null;
      const trivial = info.trivial_baselines;  // the gate's trivial baselines only: a strong one is not "chance"
      for (const ref of table.references) {
        if (trivial && !trivial.includes(ref.label)) continue;
        const v = ref.values[task] && ref.values[task][m];
        if (v !== undefined && (!bestRef || (hib ? v > bestRef.y : v < bestRef.y))) bestRef = { y: v, label: ref.label, kind: "chance" };
      }
      if (bestRef) hlines.push(bestRef);
      const refCell = pts.find((p) => p.row.attention === "softmax");
      if (refCell) hlines.push({ y: refCell.y, label: "softmax (reference)", kind: "reference" });
      const box = el("div", { class: "task-plot", "data-task": task });
      if (pts.length) {
        box.appendChild(CAB.plot({ title: task + " · " + m + (hib ? " (↑ better)" : " (↓ better)"), xLabel: axis.label + " (log)", yLabel: m, xLog: true, yLog: false,
          xFmt: axis.f, series, frontier, hlines, labels: true, legend: false, highlighting: !!q, width }));
      } else {
        box.appendChild(el("div", { class: "empty", text: task + ": no finished run reports " + axis.label + "." }));
      }
      plots.appendChild(box);
      for (const p of CAB.sortRows(pts.filter((p) => p.hit), (p) => p.y, hib)) {
        const [meanText, stdText] = CAB.fmtMeanStd(p.y, p.std);
        tb.appendChild(el("tr", { "data-attention": p.row.attention }, el("td", { text: task }), el("td", {}, el("a", { href: CAB.mechHref(p.row.attention), text: name(p.row) })),
          el("td", { class: "num" }, el("a", { href: CAB.runHref(p.cell.runs.map((x) => x[0])), text: meanText + (stdText !== null ? " ± " + stdText : "") }), CAB.dirtyMark(p.cell.dirty, p.cell.runs.length)),
          el("td", { class: "num", text: String(p.n) }),
          ["flops_per_example", "wall_s", "tokens_per_second", "state_size"].map((k) => el("td", { class: "num", text: p.cell.cost[k] === undefined ? "—" : AXES[k].f ? AXES[k].f(p.cell.cost[k]) : fmt(p.cell.cost[k]) })),
          el("td", { class: "frontier-cell", text: front.has(p) ? "✓ frontier" : "" })));
        const o = { task, attention: p.row.attention, variant: p.row.variant, scale: table.scale, hardware: table.hardware, pattern: table.pattern, metric: m, mean: p.y, std: p.std, n: p.n,
          pareto: front.has(p), run_ids: p.cell.runs.map((x) => x[0]) };
        for (const k of Object.keys(AXES)) o[k] = p.cell.cost[k] === undefined ? null : p.cell.cost[k];
        shown.push(o);
      }
    }
    body.appendChild(plots);
    body.appendChild(el("h2", { text: "Points" + (q ? " matching “" + state.q + "” (the frontier is over all points)" : "") }));
    body.appendChild(CAB.scrollBox(el("table", { class: "plain", id: "points" }, el("thead", {}, el("tr", {}, ["task", "attention", "metric (mean ± std)", "n", "FLOPs / example", "wall s", "tokens / s", "state size", "Pareto"].map((h) => el("th", { text: h })))), tb), "plainwrap"));
  }

  CAB.downloadButtons(dl, () => ("cab-cost-" + table.scale + "-" + table.hardware + "-" + table.pattern).replace(/[^A-Za-z0-9_.-]+/g, "_"),
    () => [["task", "attention", "variant", "scale", "hardware", "pattern", "metric", "mean", "std", "n", ...Object.keys(AXES), "pareto", "run_ids"].map((k) => ({ key: k })), shown]);
  const update = () => render().catch((e) => body.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })));
  scaleSel.addEventListener("change", () => { state.scale = scaleSel.value; update(); });
  hwSel.addEventListener("change", () => { state.hw = hwSel.value; update(); });
  patSel.addEventListener("change", () => { state.pattern = patSel.value; state.task = ""; update(); });
  taskSel.addEventListener("change", () => { state.task = taskSel.value; draw(); CAB.setState(state); });
  axisSel.addEventListener("change", () => { state.axis = axisSel.value; draw(); CAB.setState(state); });
  search.addEventListener("input", () => { state.q = search.value; draw(); CAB.setState(state); });
  window.addEventListener("hashchange", () => { for (const k of Object.keys(state)) delete state[k]; Object.assign(state, { axis: "flops_per_example" }, CAB.getState()); update(); });
  CAB.onResize(() => { if (table) draw(); });
  update();
})();
