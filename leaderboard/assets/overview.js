/* Overview: one tab per pattern; attentions × tasks with the primary metric (mean ± std over seeds,
 * rounded to what the seeds support, and the seed count), the CAB-style aggregate beside the
 * per-task scores, the trivial baselines as rows at the top. Each column carries its reference
 * gate's verdict (cab/gates.py): a column softmax has not learnt is marked, muted and left out of the
 * aggregate. A cell no better than its column's best trivial baseline says so; a number with seeds
 * from uncommitted code carries ✱. Sorting: header buttons (keyboard too), direction drawn and
 * announced, reset when the view changes. */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  let idx;
  try {
    idx = await CAB.header("overview");
  } catch (e) {
    main.appendChild(el("div", { class: "empty", text: "No data: build the site with `cab leaderboard build` (" + e.message + ")." }));
    return;
  }
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const GATE_TEXT = { learnt: "learnt", not_learnt: "not learnt", unknown: "no verdict" };
  const GATE_BADGE = { not_learnt: "not learnt", unknown: "unchecked" };
  const GATE_CLASS = { not_learnt: "unlearnt", unknown: "unchecked" };

  // ---- skeleton
  const context = el("div", { class: "context", id: "context" });
  const scaleSel = el("select", { id: "f-scale" }), hwSel = el("select", { id: "f-hardware" }), taskSel = el("select", { id: "f-task" });
  const viewSel = el("select", { id: "f-view" }, el("option", { value: "raw", text: "metric values" }), el("option", { value: "z", text: "task z-scores" }));
  const search = el("input", { type: "search", id: "f-search", placeholder: "search attentions…", size: 18, "aria-label": "search attentions" });
  const dl = el("span", { class: "dl" });
  const controls = el("div", { class: "controls" },
    el("label", {}, "scale", scaleSel), el("label", {}, "hardware", hwSel), el("label", {}, "task", taskSel),
    el("label", {}, "show", viewSel), search, dl);
  const tabs = el("div", { class: "tabs", id: "tabs", role: "tablist", "aria-label": "attention pattern" });
  const keyLine = el("p", { class: "keyline", id: "keyline" });
  const wrap = el("div", { class: "tablewrap board-wrap" });
  const gatesBox = el("div", { class: "gates", id: "gates" });
  const below = el("div", {});
  main.appendChild(el("h1", { text: "Attention mechanisms across patterns and tasks" }));
  main.appendChild(el("details", { class: "howto" }, el("summary", { text: "How to read this table" }),
    el("p", { text: "Each cell: the task's primary metric, mean ± standard deviation over seeds, rounded to the precision the seeds support (n = seeds that finished). The italic rows at the top are trivial baselines (chance, majority class, unigram, last value): a cell marked “≤ baseline” is no better than the best of them. A column marked “not learnt” is one where softmax, the reference, does not clear the task's gate on every seed: its numbers compare noise, and the aggregate leaves it out. A value is bold only when it is best and its mean ± std does not overlap the runner-up's. ✱ marks numbers with seeds run from uncommitted code. Sort with the column buttons (best first, then reversed; missing values always last); click a number for its runs, a name for its mechanism page." })));
  main.appendChild(context);
  main.appendChild(controls);
  main.appendChild(tabs);
  main.appendChild(keyLine);
  main.appendChild(wrap);
  main.appendChild(gatesBox);
  main.appendChild(below);

  if (!idx.tables.length) {
    wrap.appendChild(el("div", { class: "empty", text: "No training records in this build (" + idx.records + " records, " + idx.skipped_count + " files skipped)." }));
  }

  const state = Object.assign({ view: "raw" }, CAB.getState());
  const scales = [...new Set(idx.tables.map((t) => t.scale))];
  const runsOf = (s) => idx.tables.filter((t) => t.scale === s).reduce((a, t) => a + t.runs, 0);
  scales.sort((a, b) => runsOf(b) - runsOf(a) || a.localeCompare(b));
  let current = null, shown = { cols: [], rows: [] }, viewKey = null;

  async function render() {
    if (!idx.tables.length) return;
    state.scale = CAB.fillSelect(scaleSel, scales, state.scale);
    const hws = [...new Set(idx.tables.filter((t) => t.scale === state.scale).map((t) => t.hardware))];
    state.hw = CAB.fillSelect(hwSel, hws, state.hw);
    const here = idx.tables.filter((t) => t.scale === state.scale && t.hardware === state.hw);
    if (!here.some((t) => t.pattern === state.pattern)) state.pattern = (idx.patterns.find((p) => here.some((t) => t.pattern === p)));
    tabs.textContent = "";
    for (const p of idx.patterns) {
      const t = here.find((x) => x.pattern === p);
      tabs.appendChild(el("button", { type: "button", role: "tab", "data-pattern": p, class: p === state.pattern ? "active" : null,
        "aria-selected": p === state.pattern ? "true" : "false",
        disabled: t ? null : "disabled", title: t ? null : "no records for this pattern at this scale and hardware",
        onclick: () => { state.pattern = p; state.task = ""; update(); } },
      PATTERN_TEXT[p] || p, el("span", { class: "count", text: t ? t.runs + " runs" : "—" })));
    }
    const meta = here.find((t) => t.pattern === state.pattern);
    current = await CAB.load("data/" + meta.file + ".js", meta.file);
    state.task = CAB.fillSelect(taskSel, [["", "all tasks"], ...Object.keys(current.tasks)], state.task || "");
    // a sort order belongs to the view it was chosen in: another pattern, task or machine starts best first
    const key = [state.scale, state.hw, state.pattern, state.task].join("|");
    if (viewKey !== null && key !== viewKey) { state.dir = ""; state.sort = ""; }
    viewKey = key;
    viewSel.value = state.view;
    search.value = state.q || "";
    CAB.context(context, [["scale", current.scale], ["hardware", current.hardware], ["pattern", PATTERN_TEXT[current.pattern] || current.pattern]], idx);
    drawTable();
    drawBelow();
    CAB.setState(state);
  }

  /** The best trivial baseline of a column: the value a cell must beat to have learnt anything. Only
   * the baselines the column's gate calls trivial (chance, majority class, unigram, repeat-last); a
   * strong baseline such as lstf's linear model is a bar to beat, not a sign of nothing learnt. */
  function bestBaseline(task, metric, hib) {
    let best = null;
    const trivial = current.tasks[task].trivial_baselines;
    for (const ref of current.references) {
      if (trivial && !trivial.includes(ref.label)) continue;
      const v = ref.values[task] && ref.values[task][metric];
      if (v === undefined || v === null) continue;
      if (!best || (hib ? v > best.value : v < best.value)) best = { value: v, label: ref.label };
    }
    return best;
  }

  function columns() {
    const t = current, agg = t.aggregate, cols = [];
    const cell = (row, task) => cellMap.get(row.id + "\u0000" + task);
    cols.push({ key: "attention", label: "attention", sub: "", hib: false, string: true,
      value: (r) => r.attention + " " + r.variant });
    if (agg.tasks.length) {
      const single = state.task && agg.tasks.includes(state.task);
      if (!state.task || single) {
        const left = Object.keys(agg.excluded || {});
        cols.push({ key: "agg", label: single ? "task score" : "aggregate", sub: "z ↑" + (!single && left.length ? " · " + agg.tasks.length + " of " + (agg.tasks.length + left.length) + " tasks" : ""), hib: true, agg: true,
          title: single ? "mean z-score of this task's metrics (frozen constants " + (idx.normalisation || {}).file + ")"
            : "CAB-style index: z-scores per metric (frozen constants), averaged per task, then over the pattern's " + agg.tasks.length + " learnt tasks"
              + (left.length ? "; left out, not learnt: " + left.join(", ") : ""),
          value: (r) => { const a = agg.rows[r.id]; if (!a) return null; const v = single ? a.task_scores[state.task] : a.score;
            return v === undefined || v === null ? null : v; } });
      }
    }
    const tasks = state.task ? [state.task] : Object.keys(t.tasks);
    for (const task of tasks) {
      const info = t.tasks[task];
      const metrics = state.task ? Object.keys(info.metric_info).sort((a, b) => (b === info.primary_metric) - (a === info.primary_metric) || a.localeCompare(b)) : [info.primary_metric];
      for (const m of metrics) {
        const mi = info.metric_info[m] || { higher_is_better: true, description: "" };
        const z = state.view === "z" && !state.task;
        const gate = info.gate || { status: "unknown", reason: "" };
        cols.push({ key: task + ":" + m, task, metric: m, gate, label: state.task ? m : task, sub: (state.task ? "" : m + " ") + (z ? "z " : "") + (mi.higher_is_better || z ? "↑" : "↓"),
          hib: z ? true : mi.higher_is_better, baseline: z ? null : bestBaseline(task, m, mi.higher_is_better),
          title: (z ? "z-score of task " + task : m + ": " + mi.description) + (mi.higher_is_better ? " (higher is better)" : " (lower is better)")
            + "\n" + GATE_TEXT[gate.status] + (gate.reason ? ": " + gate.reason : ""),
          z, value: (r) => { const c = cell(r, task);
            if (z) { const a = agg.rows[r.id]; const v = a && a.task_scores[task]; return v === undefined ? null : v; }
            return c && c.status === "ok" && c.metrics[m] ? c.metrics[m][0] : null; } });
      }
    }
    return cols;
  }

  let cellMap = new Map();
  function drawTable() {
    cellMap = new Map(current.cells.map((c) => [c.row + "\u0000" + c.task, c]));
    const cols = columns();
    const q = (state.q || "").toLowerCase();
    let rows = current.rows.filter((r) => !q || (r.attention + " " + r.variant).toLowerCase().includes(q));
    const sortCol = cols.find((c) => c.key === state.sort) || cols.find((c) => c.agg) || cols[1] || cols[0];
    const reversed = state.dir === "rev";
    rows = CAB.sortRows(rows, sortCol.value, sortCol.hib, reversed);
    if (sortCol.agg && !state.task) {
      // a partial aggregate (some tasks not finished) ranks after every complete one, in either direction
      const complete = (r) => { const a = current.aggregate.rows[r.id]; return a && a.score !== null && a.complete; };
      rows = rows.filter(complete).concat(rows.filter((r) => !complete(r)));
    }
    const best = bestCells(cols, rows);

    const thead = el("thead", {}, el("tr", {}, cols.map((c) => {
      const th = CAB.sortHeader({ label: c.label, sub: c.sub, key: c.key, hib: c.hib, string: c.string, title: c.title,
        sorted: c === sortCol ? (reversed ? "reversed" : "best") : null,
        cls: [c.agg ? "agg" : "", c.gate ? GATE_CLASS[c.gate.status] || "" : ""].join(" ").trim(),
        extra: [c.gate && c.gate.status !== "learnt" ? el("span", { class: "badge gate " + c.gate.status, text: GATE_BADGE[c.gate.status] }) : null],
        onSort: () => {
          if (c === sortCol) state.dir = reversed ? "" : "rev"; else { state.sort = c.key; state.dir = ""; }
          drawTable(); CAB.setState(state);
          const now = cols.find((x) => x.key === (state.sort || sortCol.key)) || c;
          CAB.announce("sorted by " + now.label + (now.sub ? " " + now.sub : "") + ", " + (state.dir === "rev" ? (now.string ? "Z to A" : "worst first") : (now.string ? "A to Z" : "best first")));
          const again = wrap.querySelector('th[data-key="' + c.key + '"] button');
          if (again) again.focus();
        } });
      if (c.gate) th.setAttribute("data-gate", c.gate.status);
      return th;
    })));
    // the baselines first: a reader sees what "nothing learnt" scores before any mechanism
    const refs = el("tbody", { class: "ref" });
    for (const ref of current.references) {
      const isTrivial = Object.values(current.tasks).some((t) => (t.trivial_baselines || []).includes(ref.label));
      const tr = el("tr", { class: isTrivial ? "trivial" : "strong" }, el("td", { class: "name", title: isTrivial ? "a trivial baseline: a mechanism at or below it has learnt nothing the baseline does not know"
        : "a baseline the task records beside the trivial ones (not used by the gate)" },
      el("span", { class: "reftag", text: isTrivial ? "trivial" : "baseline" }), el("span", { class: "refname", text: ref.label })));
      for (const c of cols.slice(1)) {
        const v = c.task && !c.z && ref.values[c.task] ? ref.values[c.task][c.metric] : undefined;
        tr.appendChild(el("td", { class: c.agg ? "agg" : (c.gate && GATE_CLASS[c.gate.status]) || null, title: v !== undefined ? "baseline from the task's reference_metrics" : "not applicable",
          text: v !== undefined ? fmt(v) : "—" }));
      }
      if (cols.some((c) => c.task && !c.z && ref.values[c.task] && ref.values[c.task][c.metric] !== undefined)) refs.appendChild(tr);
    }
    const tbody = el("tbody", { id: "rows" });
    for (const r of rows) tbody.appendChild(el("tr", { "data-attention": r.attention, class: r.attention === "softmax" ? "refmech" : null }, cols.map((c) => renderCell(c, r, best))));
    const table = el("table", { class: "board", id: "board" }, thead, refs, tbody);
    wrap.textContent = "";
    wrap.appendChild(table);
    if (!rows.length) wrap.appendChild(el("div", { class: "empty", text: "No attention matches the search." }));
    shown = { cols, rows };
    const dirtyRuns = current.cells.reduce((a, c) => a + (c.dirty || 0), 0);
    keyLine.textContent = "";
    keyLine.append(...[el("span", { class: "sorted-by", id: "sorted-by", text: "Sorted by " + sortCol.label + (sortCol.sub ? " (" + sortCol.sub + ")" : "") + ": " + (reversed ? (sortCol.string ? "Z to A" : "worst first") : (sortCol.string ? "A to Z" : "best first")) + ". " }),
      dirtyRuns ? el("span", { text: "✱ = some seeds ran from uncommitted code (" + dirtyRuns + " runs in this table). " }) : null,
      el("span", { text: "≤ baseline = no better than the column's best trivial baseline." })].filter(Boolean));
    drawGates();
  }

  /** Each column's verdict with its reason, readable without hovering (the header's title repeats it). */
  function drawGates() {
    gatesBox.textContent = "";
    const tasks = Object.keys(current.tasks);
    if (!tasks.length) return;
    const excluded = current.aggregate.excluded || {};
    gatesBox.appendChild(el("h2", { text: "Is each column learnt?" }));
    gatesBox.appendChild(el("p", { class: "muted", text: "A column counts when the task's reference mechanism (softmax) beats the task's best trivial baseline (chance, majority class, unigram, repeat-last) by the task's margin, and reaches its floor, on every seed. Where it does not, mechanisms are compared on noise: the column is marked and muted, and the aggregate leaves it out. Gates: cab/gates.py; docs/reading-results.md." }));
    const ul = el("ul", { class: "gate-list" });
    for (const task of tasks) {
      const g = current.tasks[task].gate || { status: "unknown", reason: "no verdict in this build" };
      ul.appendChild(el("li", { "data-task": task, "data-gate": g.status, class: GATE_CLASS[g.status] || null },
        el("span", { class: "badge gate " + g.status, text: GATE_TEXT[g.status] || g.status }),
        el("div", {}, el("b", { text: task }),
          el("span", { class: "reason", text: ": " + (g.reason || "") + (task in excluded ? " · left out of the aggregate" : "") }),
          g.description ? el("span", { class: "spec", text: "gate: " + g.description + (g.source === "cab.gates" ? " (the task's built-in gate, cab/gates.py: these records do not state one)" : "") }) : null)));
    }
    gatesBox.appendChild(ul);
    if (Object.keys(excluded).length && !current.aggregate.tasks.length) {
      gatesBox.appendChild(el("div", { class: "warnbox", id: "no-aggregate", text: "No aggregate for this pattern: no column with frozen constants is learnt, so there is nothing to rank on." }));
    }
  }

  /** Bold the best value of a column only when its mean ± std interval does not overlap the runner-up's
   * (both need at least two seeds): LMArena's lesson about ranks inside overlapping intervals. */
  function bestCells(cols, rows) {
    const out = new Set();
    for (const c of cols) {
      if (!c.task || c.z || (c.gate && c.gate.status === "not_learnt")) continue;  // no winner in noise
      const vals = rows.map((r) => [r, cellMap.get(r.id + "\u0000" + c.task)]).filter(([, x]) => x && x.status === "ok" && x.metrics[c.metric]);
      if (vals.length < 2) continue;
      vals.sort((a, b) => (c.hib ? -1 : 1) * (a[1].metrics[c.metric][0] - b[1].metrics[c.metric][0]));
      const [m1, s1] = vals[0][1].metrics[c.metric], [m2, s2] = vals[1][1].metrics[c.metric];
      if (s1 === null || s2 === null) continue;
      if (c.hib ? m1 - s1 > m2 + s2 : m1 + s1 < m2 - s2) out.add(vals[0][0].id + "\u0000" + c.key);
    }
    return out;
  }

  function renderCell(c, r, best) {
    if (c.key === "attention") {
      return el("td", { class: "name" }, el("a", { class: "mech", href: CAB.mechHref(r.attention), title: r.attention + (r.variant ? " [" + r.variant + "]" : "") + ": its page (paper, patterns, every result)", text: r.attention }),
        r.attention === "softmax" ? el("span", { class: "reftag", title: "the reference mechanism of every column's gate", text: "reference" }) : null,
        r.variant ? el("span", { class: "variant", text: r.variant }) : null);
    }
    const allRuns = current.cells.filter((x) => x.row === r.id).flatMap((x) => x.runs.map((y) => y[0]));
    if (c.agg) {
      const a = current.aggregate.rows[r.id];
      const v = a ? (state.task ? a.task_scores[state.task] : a.score) : null;
      if (v === null || v === undefined) return el("td", { class: "agg", title: "no finished run of a normalised task", text: "—" });
      const n = current.aggregate.tasks.length;
      return el("td", { class: "agg" }, el("a", { href: CAB.runHref(allRuns), title: "runs behind this score" }, fmt(v, 3)),
        !state.task && !a.complete ? el("span", { class: "badge partial", title: "partial: only " + a.tasks_used + " of " + n + " tasks finished; ranked after complete rows", text: a.tasks_used + "/" + n + " tasks" }) : null);
    }
    const muted = (c.gate && GATE_CLASS[c.gate.status]) || null;
    const cell = cellMap.get(r.id + "\u0000" + c.task);
    if (!cell) return el("td", { class: muted, title: "no record for this attention, task and pattern" }, badge("notrun", "no record"));
    const href = CAB.runHref(cell.runs.map((x) => x[0]));
    const seeds = cell.runs.map((x) => "seed " + (x[1] === null ? "?" : x[1]) + ": " + x[2] + (x[3] ? " (uncommitted code)" : "")).join("\n");
    if (cell.status !== "ok") {
      const note = cell.note || "";
      return el("td", { class: "status " + cell.status + (muted ? " " + muted : ""), title: (CAB.STATUS_TEXT[cell.status] + (note ? ": " + note : "")) + "\n" + seeds },
        el("a", { href }, badge(cell.status, note)), note ? el("span", { class: "why", text: note }) : null);
    }
    if (c.z) {
      const v = c.value(r);
      const why = c.gate && c.gate.status === "not_learnt" ? "not learnt: left out of the aggregate\n" : "";
      return el("td", { class: muted, title: why + seeds }, v === null ? "—" : el("a", { href, text: fmt(v, 3) }));
    }
    const mv = cell.metrics[c.metric];
    if (!mv) return el("td", { class: muted, title: "metric not reported", text: "—" });
    const failedSeeds = cell.runs.filter((x) => x[2] !== "ok");
    const [meanText, stdText] = CAB.fmtMeanStd(mv[0], mv[1]);
    const weak = c.baseline && (c.hib ? mv[0] <= c.baseline.value : mv[0] >= c.baseline.value);
    return el("td", { class: [best.has(r.id + "\u0000" + c.key) ? "best" : "", weak ? "weak" : "", muted || ""].join(" ").trim() || null,
      title: seeds + (weak ? "\nno better than the " + c.baseline.label + " baseline (" + fmt(c.baseline.value) + ")" : "") + (cell.other_configs ? "\n(" + cell.other_configs + " other configuration(s) of this cell not shown)" : "") },
    el("a", { href, class: "val" }, meanText, stdText !== null ? el("span", { class: "pm", text: " ± " + stdText }) : null),
    el("span", { class: "n", text: "n=" + mv[2] }), CAB.dirtyMark(cell.dirty, cell.runs.length),
    weak ? el("span", { class: "badge weak", text: "≤ baseline" }) : null,
    failedSeeds.length ? el("span", { class: "badge partial", title: failedSeeds.map((x) => "seed " + x[1] + ": " + x[2]).join("\n"), text: "+" + failedSeeds.length + " " + failedSeeds[0][2] }) : null);
  }

  function drawBelow() {
    below.textContent = "";
    const norm = idx.normalisation;
    below.appendChild(el("h2", { text: "How the aggregate is computed" }));
    below.appendChild(el("p", { class: "explain", text:
      "Each metric is turned into a z-score, z = ±(x − μ)/σ (sign flipped when lower is better), with μ and σ frozen per scale × pattern × task × metric in a versioned file, so adding an attention never moves anyone else's score; z-scores are averaged within a task, and task scores are averaged with equal weight within the pattern (CAB's compositional index). The per-task scores stand beside it because an average hides where a mechanism fails. A column whose reference gate says it is not learnt is left out, whatever its constants: its z-scores would rank seed noise." }));
    if (!norm) {
      below.appendChild(el("div", { class: "warnbox", text: "No normalisation file is frozen for this build, so no aggregate is shown. Freeze one with `cab leaderboard build --freeze-normalisation`." }));
    } else {
      const consts = ((norm.constants || {})[current.scale] || {})[current.pattern] || {};
      const d = el("details", { id: "normalisation" }, el("summary", { text: "Normalisation constants: " + norm.file + " (version " + norm.version + ", frozen " + norm.created_at + ")" }));
      if (!Object.keys(consts).length) d.appendChild(el("p", { class: "muted", text: "No constants for scale " + current.scale + " and this pattern: only per-task scores are shown." }));
      else {
        const tb = el("tbody");
        for (const [task, ms] of Object.entries(consts)) for (const [m, c] of Object.entries(ms)) {
          tb.appendChild(el("tr", {}, el("td", { text: task }), el("td", { text: m }), el("td", { class: "num", text: fmt(c.mean) }),
            el("td", { class: "num", text: fmt(c.std) }), el("td", { text: c.higher_is_better ? "higher" : "lower" }), el("td", { class: "num", text: c.n_attentions || "" })));
        }
        d.appendChild(CAB.scrollBox(el("table", { class: "plain" }, el("thead", {}, el("tr", {}, ["task", "metric", "μ", "σ", "better", "attentions"].map((h) => el("th", { text: h })))), tb)));
      }
      d.appendChild(el("p", {}, "Download: ", el("a", { href: "data/" + norm.file, text: norm.file }), ". Method: ", el("span", { class: "muted", text: norm.method || "" })));
      below.appendChild(d);
    }
    below.appendChild(el("h2", { text: "Statuses" }));
    const st = el("dl", { class: "kv" });
    for (const [s, text] of [["ok", "finished; the number is the mean over its finished seeds"], ["unsupported", "the attention cannot express this pattern; its stated reason is written in the cell and on the run page"],
      ["failed", "the run raised an error (message in the cell and on the run page)"], ["oom", "out of memory"], ["nan", "the loss or a metric became NaN or infinite"],
      ["timeout", "the run passed its time limit"], ["notrun", "no record for this cell in the results"]]) {
      st.appendChild(el("dt", {}, badge(s))); st.appendChild(el("dd", { text }));
    }
    below.appendChild(st);
    if (idx.dirty_runs) {
      below.appendChild(el("p", { class: "muted", id: "dirty-note", text: idx.dirty_runs + " of " + idx.records + " runs in this build came from a working tree with uncommitted changes (env.git_dirty): their commit does not pin the code exactly. Their numbers carry ✱; each run page names the commit." }));
    }
    const full = CAB.fullData(idx);
    if (full) below.appendChild(full);
    if (idx.skipped_count) {
      const box = el("details", { class: "warnbox" }, el("summary", { text: idx.skipped_count + " result file(s) were malformed and skipped" }));
      const ul = el("ul");
      for (const s of idx.skipped) ul.appendChild(el("li", {}, el("code", { text: s.file }), " — " + s.problem));
      box.appendChild(ul);
      below.appendChild(box);
    }
  }

  function basename() { return "cab-" + current.scale + "-" + current.hardware + "-" + current.pattern + (state.task ? "-" + state.task : ""); }
  CAB.downloadButtons(dl, () => basename().replace(/[^A-Za-z0-9_.-]+/g, "_"), () => {
    const cols = ["attention", "variant", "scale", "hardware", "pattern"].map((key) => ({ key }));
    for (const c of shown.cols.slice(1)) {
      if (c.agg || c.z) cols.push({ key: c.key });
      else for (const s of ["mean", "std", "n", "status", "gate", "dirty", "run_ids"]) cols.push({ key: c.key + ":" + s });
    }
    const rows = shown.rows.map((r) => {
      const o = { attention: r.attention, variant: r.variant, scale: current.scale, hardware: current.hardware, pattern: current.pattern };
      for (const c of shown.cols.slice(1)) {
        if (c.agg || c.z) { o[c.key] = c.value(r); continue; }
        const cell = cellMap.get(r.id + "\u0000" + c.task), mv = cell && cell.metrics[c.metric];
        o[c.key + ":mean"] = mv ? mv[0] : null; o[c.key + ":std"] = mv ? mv[1] : null; o[c.key + ":n"] = mv ? mv[2] : 0;
        o[c.key + ":status"] = cell ? cell.status : "notrun";
        o[c.key + ":gate"] = c.gate ? c.gate.status : "";
        o[c.key + ":dirty"] = cell ? cell.dirty || 0 : 0;
        o[c.key + ":run_ids"] = cell ? cell.runs.map((x) => x[0]) : [];
      }
      return o;
    });
    return [cols, rows];
  });

  function update() { render().catch((e) => { wrap.textContent = ""; wrap.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })); }); }
  scaleSel.addEventListener("change", () => { state.scale = scaleSel.value; update(); });
  hwSel.addEventListener("change", () => { state.hw = hwSel.value; update(); });
  taskSel.addEventListener("change", () => { state.task = taskSel.value; update(); });
  viewSel.addEventListener("change", () => { state.view = viewSel.value; drawTable(); CAB.setState(state); });
  search.addEventListener("input", () => { state.q = search.value; drawTable(); CAB.setState(state); });
  // a link or the back button that changes only the #hash: read the state again
  window.addEventListener("hashchange", () => { for (const k of Object.keys(state)) delete state[k]; Object.assign(state, { view: "raw" }, CAB.getState()); viewKey = null; update(); });
  update();
})();
