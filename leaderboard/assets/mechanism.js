/* Mechanisms: mechanism.html lists every attention in the build; mechanism.html#name=NAME is one
 * attention's page: what it is (its docstring's paragraph, paper, family: from the registry, so a
 * plugin gets a page too), the patterns it supports and the stated reason for each it does not, its
 * hyperparameters (defaults and as run), its accuracy on every task and pattern beside the reference
 * mechanism and the trivial baselines, its efficiency curves against softmax and vanilla, its state
 * size, and its docstring's algorithm. Data: data/mechanisms.js and data/mech/<file>.js. */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("mechanism");
  const list = await CAB.mechanisms().catch(() => null);
  if (!list) {
    main.appendChild(el("div", { class: "empty", text: "No mechanism data in this build: rebuild the site with `cab leaderboard build`." }));
    return;
  }
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const GATE_TEXT = { learnt: "learnt", not_learnt: "not learnt", unknown: "no verdict" };
  let state = CAB.getState();

  function paperLine(m) {
    const p = m.paper;
    if (!p) return m.citation ? el("p", { class: "paper", text: m.citation }) : null;
    const meta = [p.authors, [p.venue, p.year].filter(Boolean).join(" ")].filter(Boolean).join(", ");
    return el("p", { class: "paper" }, p.url ? el("a", { href: p.url, rel: "noopener", text: "“" + p.title + "”" }) : "“" + p.title + "”", meta ? " (" + meta + ")" : "");
  }
  function familyTag(m) {
    return m.family ? el("span", { class: "family", title: m.family_text || "", text: m.family }) : null;
  }
  function patternMarks(m) {
    return el("span", { class: "pmarks" }, CAB.PATTERNS.map((p) => {
      const v = m.patterns[p];
      return el("span", { class: "pmark " + (v === true ? "yes" : v ? "no" : "unknown"), title: PATTERN_TEXT[p] + ": " + (v === true ? "supported" : v || "no record"),
        text: (v === true ? "✓ " : v ? "✗ " : "? ") + PATTERN_TEXT[p] });
    }));
  }

  // ---- the list
  function drawList() {
    main.textContent = "";
    main.appendChild(el("h1", { text: "Mechanisms" }));
    main.appendChild(el("p", { class: "lead", text: "Every attention in this build: its family, its paper and the patterns it supports (✓) or not (✗, with the reason on its page). Metadata comes from the registry (`@register_attention(..., family=, paper=)`); a plugin without metadata shows its docstring. Open one for its results everywhere, or compare two to four." }));
    const families = [...new Set(list.map((m) => m.family || "unspecified"))].sort();
    const famSel = el("select", { id: "f-family" });
    CAB.fillSelect(famSel, [["", "all families"], ...families], state.family || "");
    const search = el("input", { type: "search", id: "f-search", placeholder: "search mechanisms…", size: 18, "aria-label": "search mechanisms", value: state.q || "" });
    main.appendChild(el("div", { class: "controls" }, el("label", {}, "family", famSel), search, el("a", { href: "compare.html", text: "Compare mechanisms →" })));
    const grid = el("div", { class: "mech-list", id: "mech-list" });
    main.appendChild(grid);
    const fill = () => {
      grid.textContent = "";
      const q = (state.q || "").toLowerCase();
      for (const m of list) {
        if (state.family && (m.family || "unspecified") !== state.family) continue;
        const text = [m.name, m.family, m.paper ? m.paper.title : m.citation].join(" ").toLowerCase();
        if (q && !text.includes(q)) continue;
        grid.appendChild(el("section", { class: "card", "data-name": m.name },
          el("h2", {}, el("a", { href: CAB.mechHref(m.name), text: m.name }), " ", familyTag(m),
            m.plugin ? el("span", { class: "reftag", text: "plugin" }) : null, !m.registered ? el("span", { class: "reftag", title: "not registered in this build: shown from its records", text: "records only" }) : null),
          paperLine(m), patternMarks(m),
          el("p", { class: "muted", text: m.counts.train + " training runs (" + m.counts.ok + " ok), " + m.counts.efficiency + " efficiency runs" })));
      }
      if (!grid.children.length) grid.appendChild(el("div", { class: "empty", text: "No mechanism matches." }));
    };
    famSel.addEventListener("change", () => { state.family = famSel.value; CAB.setState(state); fill(); });
    search.addEventListener("input", () => { state.q = search.value; CAB.setState(state); fill(); });
    fill();
  }

  // ---- one mechanism
  async function drawOne(name) {
    main.textContent = "";
    const entry = list.find((m) => m.name === name);
    if (!entry) {
      main.appendChild(el("h1", { text: "Unknown mechanism" }));
      main.appendChild(el("div", { class: "empty", id: "unknown", text: "No mechanism " + JSON.stringify(name) + " in this build; valid: " + list.map((m) => m.name).join(", ") + "." }));
      main.appendChild(el("p", {}, el("a", { href: "mechanism.html", text: "All mechanisms" })));
      return;
    }
    const m = await CAB.mechanism(entry.file);
    document.title = "cab leaderboard · " + m.name;
    const head = el("div", { class: "mech-head" });
    head.appendChild(el("h1", {}, el("span", { id: "mech-name", text: m.name }), " ", familyTag(m)));
    const paper = paperLine(m);
    if (paper) head.appendChild(paper);
    if (m.family_text) head.appendChild(el("p", { class: "muted family-text", text: m.family + ": " + m.family_text }));
    if (m.summary && (m.paper || m.summary !== m.citation)) head.appendChild(el("p", { class: "summary", id: "summary", text: m.summary }));
    const origin = !m.registered ? "Not registered in this build of cab: what this page says comes from its records only."
      : m.plugin ? "A plugin attention: class " + m.class + " in module " + m.module + "." : "Built in: class " + m.class + " in " + m.module + ".";
    head.appendChild(el("p", { class: "muted", id: "origin", text: origin }));
    head.appendChild(el("p", {}, el("a", { href: "compare.html#names=" + encodeURIComponent([m.name, m.name === "softmax" ? "linear" : "softmax"].join(",")), text: "Compare with another mechanism →" }),
      " · ", el("a", { href: "mechanism.html", text: "all mechanisms" })));
    main.appendChild(head);

    // patterns, with the stated reasons (never only on hover)
    main.appendChild(el("h2", { text: "Patterns" }));
    main.appendChild(el("ul", { class: "patterns", id: "patterns" }, CAB.PATTERNS.map((p) => {
      const v = m.patterns[p];
      return el("li", { class: v === true ? "yes" : "no", "data-pattern": p }, el("b", { text: (v === true ? "✓ " : "✗ ") + PATTERN_TEXT[p] }),
        v === true ? "supported" : el("span", { class: "reason", text: v ? "not supported: " + v : "no record for this pattern" }));
    })));

    // hyperparameters
    main.appendChild(el("h2", { text: "Hyperparameters" }));
    const defaults = Object.entries(m.default_hparams || {});
    if (defaults.length) {
      main.appendChild(el("p", { class: "muted", text: "Defaults of the class (keyword arguments beyond dim, num_heads, pattern):" }));
      main.appendChild(el("dl", { class: "kv", id: "defaults" }, defaults.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: JSON.stringify(v) })])));
    }
    if (m.hparams.length) {
      main.appendChild(el("p", { class: "muted", text: "As run (from the records' resolved configs):" }));
      main.appendChild(CAB.scrollBox(el("table", { class: "plain", id: "hparams" },
        el("thead", {}, el("tr", {}, ["hyperparameters", "runs", "tasks", "scales"].map((h) => el("th", { text: h })))),
        el("tbody", {}, m.hparams.map((h) => el("tr", {}, el("td", {}, el("code", { text: Object.entries(h.hparams).map(([k, v]) => k + "=" + JSON.stringify(v)).join(", ") || "(none)" })),
          el("td", { class: "num", text: String(h.runs) }), el("td", { text: h.tasks.join(", ") }), el("td", { text: h.scales.join(", ") }))))), "plainwrap"));
    } else {
      main.appendChild(el("p", { class: "muted", text: "No training run in this build." }));
    }

    drawAccuracy(m);
    drawEfficiency(m);

    // state size
    main.appendChild(el("h2", { text: "State size" }));
    if (m.state_sizes.length) {
      main.appendChild(el("p", { class: "muted", text: "The recurrent state its runs report (cost.state_size, numbers over all layers; for exact attention the KV cache), which grows with the width (and with the length for a KV cache). Accuracy against it: the Zoology view." }));
      main.appendChild(CAB.scrollBox(el("table", { class: "plain", id: "state-sizes" },
        el("thead", {}, el("tr", {}, ["scale", "task", "pattern", "length", "width", "state size"].map((h) => el("th", { text: h })))),
        el("tbody", {}, m.state_sizes.map((s) => el("tr", {}, el("td", { text: s.scale }), el("td", { text: s.task }), el("td", { text: PATTERN_TEXT[s.pattern] || s.pattern }),
          el("td", { class: "num", text: s.seq_len === null ? "—" : String(s.seq_len) }), el("td", { class: "num", text: s.d_model === null ? "—" : String(s.d_model) }),
          el("td", { class: "num", title: String(s.state_size), text: CAB.fmtCount(s.state_size) }))))), "plainwrap"));
    } else {
      main.appendChild(el("p", { class: "muted", text: "Its runs report no recurrent state size (no recurrent form, or not measured)." }));
    }

    if (m.doc) {
      main.appendChild(el("details", { class: "algorithm" }, el("summary", { text: "The algorithm, from its docstring" }), el("pre", { text: m.doc })));
    }
    const full = CAB.fullData(idx);
    if (full) main.appendChild(full);
  }

  function drawAccuracy(m) {
    main.appendChild(el("h2", { text: "Accuracy on every task and pattern" }));
    if (!m.accuracy.length) { main.appendChild(el("p", { class: "muted", text: "No training records for this mechanism in this build." })); return; }
    const groups = m.accuracy;
    const key = (g) => g.scale + " · " + g.hardware;
    const sel = el("select", { id: "f-where" });
    const chosen = CAB.fillSelect(sel, groups.map((g) => [key(g), "scale " + g.scale + " · " + g.hardware]), state.where || key(groups[0]));
    const box = el("div", { id: "accuracy" });
    if (groups.length > 1) main.appendChild(el("div", { class: "controls" }, el("label", {}, "scale · hardware", sel)));
    main.appendChild(el("p", { class: "muted", text: "Each row: the task's primary metric for this mechanism (mean ± std over seeds, n), beside softmax (the reference its gate judges by), the best trivial baseline, and its rank among the mechanisms of the column. Columns not learnt by the reference compare noise." }));
    main.appendChild(box);
    const fill = (k) => {
      box.textContent = "";
      const g = groups.find((x) => key(x) === k) || groups[0];
      for (const p of CAB.PATTERNS) {
        const tasks = g.patterns[p];
        if (!tasks) continue;
        const rows = [];
        for (const [task, col] of Object.entries(tasks)) {
          const bestBase = Object.entries(col.baselines).reduce((b, [label, v]) => (!b || (col.hib ? v > b[1] : v < b[1]) ? [label, v] : b), null);
          for (const r of col.rows) {
            let value;
            if (r.status === "ok" && r.value) {
              const [mt, st] = CAB.fmtMeanStd(r.value[0], r.value[1]);
              const weak = bestBase && (col.hib ? r.value[0] <= bestBase[1] : r.value[0] >= bestBase[1]);
              value = el("td", { class: "num" + (weak ? " weak" : "") }, el("a", { class: "val", href: CAB.runHref(r.runs), text: mt + (st !== null ? " ± " + st : "") }),
                el("span", { class: "n", text: " n=" + r.value[2] }), CAB.dirtyMark(r.dirty, r.runs.length), weak ? el("span", { class: "badge weak", text: "≤ baseline" }) : null);
            } else {
              value = el("td", { class: "num" }, el("a", { href: CAB.runHref(r.runs) }, badge(r.status, r.note)), r.note ? el("span", { class: "why", text: r.note }) : null);
            }
            const ref = col.reference;
            const refText = ref && ref.value ? CAB.fmtMeanStd(ref.value[0], ref.value[1]).filter((x) => x !== null).join(" ± ") : "—";
            rows.push(el("tr", { "data-task": task },
              el("td", { class: "name", title: r.variant ? task + " [" + r.variant + "]" : task }, el("span", { text: task }),
                el("span", { class: "variant", text: col.metric + (col.hib ? " ↑" : " ↓") + (r.variant ? " · " + r.variant : "") })), value,
              el("td", { class: "num", title: ref ? "the reference mechanism, " + ref.attention : "no reference run", text: refText }),
              el("td", { class: "num", title: bestBase ? bestBase[0] : "no baseline recorded", text: bestBase ? fmt(bestBase[1]) + " " + bestBase[0] : "—" }),
              el("td", { class: "num", text: col.rank ? col.rank + " of " + col.of : "—" }),
              el("td", { title: col.gate.reason }, el("span", { class: "badge gate " + col.gate.status, text: GATE_TEXT[col.gate.status] || col.gate.status }))));
          }
        }
        box.appendChild(el("h3", { text: PATTERN_TEXT[p] || p }));
        box.appendChild(CAB.scrollBox(el("table", { class: "board mech-acc", "data-pattern": p },
          el("thead", {}, el("tr", {}, ["task", m.name, "softmax (reference)", "best trivial baseline", "rank", "column"].map((h) => el("th", { text: h, scope: "col" })))),
          el("tbody", {}, rows))));
      }
    };
    sel.addEventListener("change", () => { state.where = sel.value; CAB.setState(state); fill(sel.value); });
    fill(chosen);
  }

  function drawEfficiency(m) {
    main.appendChild(el("h2", { text: "Efficiency against softmax and vanilla" }));
    if (!m.efficiency.length) { main.appendChild(el("p", { class: "muted", text: "No efficiency records for this mechanism in this build (`cab bench attention=" + m.name + "`)." })); return; }
    const settingsText = (s) => Object.entries(s).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => k + " " + v).join(", ");
    const sel = el("select", { id: "f-eff" });
    // a plain forward pass first, then decode and distributed measurements
    const plain = (g) => (g.settings.direction === "forward" || !g.settings.direction ? 0 : 1) + (g.settings.world_size || g.settings.strategy ? 1 : 0);
    const order = m.efficiency.map((g, i) => [g, i]).sort((a, b) => plain(a[0]) - plain(b[0]) || a[1] - b[1]);
    const chosen = CAB.fillSelect(sel, order.map(([g, i]) => [String(i), g.hardware + " · " + settingsText(g.settings)]), state.eff || String(order[0][1]));
    if (m.efficiency.length > 1) main.appendChild(el("div", { class: "controls" }, el("label", {}, "measured on", sel)));
    const box = el("div", { id: "efficiency" });
    main.appendChild(box);
    const BASE = { softmax: { color: "#1d2433", dash: "7 3", marker: "square" }, vanilla: { color: "#6b7280", dash: "3 3", marker: "diamond" } };
    const fill = (i) => {
      box.textContent = "";
      const g = m.efficiency[Number(i)] || m.efficiency[0];
      const decode = g.settings.direction === "decode";
      for (const [p, lines] of Object.entries(g.patterns)) {
        const name = (l) => l.attention + (l.variant ? " [" + l.variant + "]" : "");
        const series = (key, k) => lines.filter((l) => l.status === "ok").map((l, j) => Object.assign({ name: name(l), line: true, baseline: l.attention !== m.name,
          points: l.points.filter((q) => q.status === "ok" && q[key] > 0).map((q) => {
          const iqr = key === "time_median_s" && q.time_iqr_s ? q.time_iqr_s * k : null;  // bars: the repeats' interquartile range
          return { x: q.length, y: q[key] * k, yLo: iqr !== null ? q[key] * k - iqr / 2 : null, yHi: iqr !== null ? q[key] * k + iqr / 2 : null,
            href: CAB.runHref([l.run_id]), title: name(l) + " at " + q.length + ": " + (key === "time_median_s" ? fmt(q[key] * 1e3) + " ms" : CAB.fmtBytes(q[key])) };
        }),
          fails: l.points.filter((q) => q.status !== "ok").map((q) => ({ x: q.length, label: q.status === "oom" ? "OOM" : q.status, title: name(l) })) },
        l.attention === m.name ? CAB.styleOf(j) : BASE[l.attention] || {}));
        const width = CAB.plotWidth(main, 2);
        box.appendChild(el("h3", { text: PATTERN_TEXT[p] || p }));
        box.appendChild(el("div", { class: "plots" },
          CAB.plot({ title: decode ? "time per generated token" : "time", xLabel: decode ? "context length" : "sequence length", yLabel: decode ? "ms per token" : "time (ms)", xLog: true, yLog: true, xBase: 2, width, series: series("time_median_s", 1e3) }),
          CAB.plot({ title: "peak memory", xLabel: decode ? "context length" : "sequence length", yLabel: "MiB", xLog: true, yLog: true, xBase: 2, width, series: series("peak_memory_bytes", 1 / 1048576) })));
      }
    };
    sel.addEventListener("change", () => { state.eff = sel.value; CAB.setState(state); fill(sel.value); });
    fill(chosen);
  }

  function route() {
    state = CAB.getState();
    if (state.name) drawOne(state.name).catch((e) => main.appendChild(el("div", { class: "empty", text: "Could not load data: " + e.message })));
    else drawList();
  }
  window.addEventListener("hashchange", route);
  let lastW = window.innerWidth;
  CAB.onResize(() => { if (state.name && Math.abs(window.innerWidth - lastW) > 24) { lastW = window.innerWidth; route(); } });
  route();
})();
