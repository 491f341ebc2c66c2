/* Zoology view: MQAR accuracy against recurrent state size (Zoology figure 2; Based figure 2 right),
 * one plot per (sequence length, key-value pairs), one line per mechanism through its model widths,
 * bars ± one standard deviation over seeds, the chance line (guessing a value from the context).
 * Where several learning rates (configurations) ran for one point, the best is drawn, as Zoology
 * does, and the point says so. Data: data/zoology.js (cab/leaderboard/zoology.py). */
"use strict";
(async function () {
  const { el, fmt } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("zoology");
  main.appendChild(el("h1", { text: "Zoology: recall against state size" }));
  main.appendChild(el("p", { class: "lead", text: "Multi-query associative recall (MQAR) accuracy against the state each mechanism carries from token to token (cost.state_size: the recurrent state, or exact attention's KV cache, over all layers). Zoology and Based plot this to show that recall costs state. One plot per sequence length and number of key-value pairs; one line per mechanism through its model widths; bars ± one standard deviation over seeds; the red line is chance (guessing a value from the context)." }));
  const context = el("div", { class: "context", id: "context" });
  main.appendChild(context);
  const groups = idx.zoology || [];
  if (!groups.length) {
    CAB.context(context, [["scale", "—"], ["hardware", "—"]], idx);
    main.appendChild(el("div", { class: "empty", id: "no-zoology", text: "No MQAR records with a sequence length, a number of key-value pairs and a state size in this build. Zoology's grid at CPU size: `cab run -m experiment=zoology_fig2_cpu attention=softmax,linear,based,mamba`." }));
    return;
  }
  const all = await CAB.load("data/zoology.js", "zoology");
  const PATTERN_TEXT = CAB.PATTERN_TEXT;
  const scaleSel = el("select", { id: "f-scale" }), hwSel = el("select", { id: "f-hardware" }), patSel = el("select", { id: "f-pattern" });
  const search = el("input", { type: "search", id: "f-search", placeholder: "highlight mechanisms…", size: 18, "aria-label": "highlight mechanisms" });
  const dl = el("span", { class: "dl" });
  main.appendChild(el("div", { class: "controls" }, el("label", {}, "scale", scaleSel), el("label", {}, "hardware", hwSel), el("label", {}, "pattern", patSel), search, dl));
  const body = el("div", { id: "zoology-body" });
  main.appendChild(body);
  const state = CAB.getState();
  let shown = [];

  function draw() {
    state.scale = CAB.fillSelect(scaleSel, [...new Set(all.map((g) => g.scale))], state.scale);
    state.hw = CAB.fillSelect(hwSel, [...new Set(all.filter((g) => g.scale === state.scale).map((g) => g.hardware))], state.hw);
    const here = all.filter((g) => g.scale === state.scale && g.hardware === state.hw);
    const pats = here.map((g) => g.pattern);
    state.pattern = CAB.fillSelect(patSel, pats.map((p) => [p, PATTERN_TEXT[p] || p]), state.pattern || (pats.includes("causal_self") ? "causal_self" : pats[0]));
    const g = here.find((x) => x.pattern === state.pattern);
    search.value = state.q || "";
    CAB.context(context, [["scale", g.scale], ["hardware", g.hardware], ["pattern", PATTERN_TEXT[g.pattern] || g.pattern], ["task", "mqar"]], idx);
    body.textContent = "";
    shown = [];
    const q = (state.q || "").toLowerCase();
    const names = [...new Set(g.facets.flatMap((f) => f.lines.map((l) => l.attention + (l.variant ? " [" + l.variant + "]" : ""))))].sort();
    const styleOf = (n) => (n === "softmax" ? { color: "#1d2433", dash: "7 3", marker: "square" } : CAB.styleOf(names.indexOf(n)));
    const grid = el("div", { class: "plots facet-grid" });
    const width = CAB.plotWidth(main, 2);
    const tb = el("tbody");
    for (const f of g.facets) {
      const series = f.lines.map((l) => {
        const n = l.attention + (l.variant ? " [" + l.variant + "]" : "");
        return Object.assign({ name: n, line: true, baseline: l.attention === "softmax", highlight: !!q && n.toLowerCase().includes(q),
          points: l.points.map((p) => ({ x: p.state_size, y: p.mean, yLo: p.std !== null ? p.mean - p.std : null, yHi: p.std !== null ? p.mean + p.std : null,
            href: CAB.runHref(p.runs), label: false,
            title: n + " · width " + (p.d_model === null ? "?" : p.d_model) + "\nstate size " + CAB.fmtCount(p.state_size) + "\naccuracy " + CAB.fmtMeanStd(p.mean, p.std).filter((x) => x !== null).join(" ± ") + " (n=" + p.n + (p.failed ? ", " + p.failed + " failed" : "") + ")"
              + (p.chosen_from > 1 ? "\nbest of " + p.chosen_from + " configurations (differing in " + (p.differing.join(", ") || "?") + ")" : "") })) }, styleOf(n));
      });
      const box = el("div", { class: "facet", "data-seq-len": f.seq_len, "data-kv": f.num_kv_pairs });
      box.appendChild(CAB.plot({ title: "length " + f.seq_len + " · " + f.num_kv_pairs + " key-value pairs", xLabel: "state size (numbers, log)", yLabel: "accuracy",
        xLog: true, yLog: false, xFmt: CAB.fmtCount, yDomain: [0, 1.02], series, highlighting: !!q, labels: false, width,
        hlines: f.chance !== null ? [{ y: f.chance, label: "chance " + fmt(f.chance, 3), kind: "chance" }] : [] }));
      if (f.no_state.length) box.appendChild(el("p", { class: "muted no-state", text: "No state size reported (not drawn): " + f.no_state.join(", ") + "." }));
      grid.appendChild(box);
      for (const l of f.lines) for (const p of l.points) {
        const n = l.attention + (l.variant ? " [" + l.variant + "]" : "");
        const [mt, st] = CAB.fmtMeanStd(p.mean, p.std);
        tb.appendChild(el("tr", {}, el("td", { class: "num", text: String(f.seq_len) }), el("td", { class: "num", text: String(f.num_kv_pairs) }),
          el("td", {}, el("a", { href: CAB.mechHref(l.attention), text: n })), el("td", { class: "num", text: p.d_model === null ? "—" : String(p.d_model) }),
          el("td", { class: "num", title: String(p.state_size), text: CAB.fmtCount(p.state_size) }),
          el("td", { class: "num" }, el("a", { href: CAB.runHref(p.runs), text: mt + (st !== null ? " ± " + st : "") }), CAB.dirtyMark(p.dirty, p.runs.length)), el("td", { class: "num", text: String(p.n) }),
          el("td", { text: p.chosen_from > 1 ? "best of " + p.chosen_from + " (" + p.differing.join(", ") + ")" : "" })));
        shown.push({ seq_len: f.seq_len, num_kv_pairs: f.num_kv_pairs, attention: l.attention, variant: l.variant, d_model: p.d_model, state_size: p.state_size,
          accuracy_mean: p.mean, accuracy_std: p.std, n: p.n, chosen_from: p.chosen_from, run_ids: p.runs });
      }
    }
    body.appendChild(grid);
    body.appendChild(el("h2", { text: "Points" }));
    body.appendChild(CAB.scrollBox(el("table", { class: "plain", id: "zoo-points" }, el("thead", {}, el("tr", {},
      ["length", "kv pairs", "attention", "width", "state size", "accuracy (mean ± std)", "n", "configuration"].map((h) => el("th", { text: h })))), tb), "plainwrap"));
    const full = CAB.fullData(idx);
    if (full) body.appendChild(full);
    CAB.setState(state);
  }

  CAB.downloadButtons(dl, () => ("cab-zoology-" + state.scale + "-" + state.hw + "-" + state.pattern).replace(/[^A-Za-z0-9_.-]+/g, "_"),
    () => [["seq_len", "num_kv_pairs", "attention", "variant", "d_model", "state_size", "accuracy_mean", "accuracy_std", "n", "chosen_from", "run_ids"].map((key) => ({ key })), shown]);
  scaleSel.addEventListener("change", () => { state.scale = scaleSel.value; draw(); });
  hwSel.addEventListener("change", () => { state.hw = hwSel.value; draw(); });
  patSel.addEventListener("change", () => { state.pattern = patSel.value; draw(); });
  search.addEventListener("input", () => { state.q = search.value; draw(); });
  window.addEventListener("hashchange", () => { for (const k of Object.keys(state)) delete state[k]; Object.assign(state, CAB.getState()); draw(); });
  CAB.onResize(draw);
  draw();
})();
