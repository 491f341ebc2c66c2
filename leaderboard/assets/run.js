/* Run page: run.html?ids=ID[,ID...] shows each run's command, resolved config, environment, commit,
 * scale, hardware, duration and error. Runs live in data/runs/<shard>.js, the shard being FNV-1a of
 * the id modulo the shard count (the same function as cab/leaderboard/data.py: fnv1a). */
"use strict";
(async function () {
  const { el, fmt, badge } = CAB;
  const main = document.getElementById("main");
  const idx = await CAB.header("run");

  function fnv1a(s) {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i) & 0xff; h = Math.imul(h, 0x01000193) >>> 0; }
    return h >>> 0;
  }
  const shardOf = (id) => (fnv1a(id) % idx.run_shards).toString(16).padStart(2, "0");

  const params = new URLSearchParams(location.search);
  const ids = (params.get("ids") || params.get("id") || "").split(",").filter((x) => /^[A-Za-z0-9_.-]{1,80}$/.test(x));
  if (!ids.length) {
    main.appendChild(el("div", { class: "empty", text: "No run given: open a run from a table cell (run.html?ids=<run_id>)." }));
    return;
  }
  const runs = [];
  for (const id of ids) {
    const shard = shardOf(id);
    try {
      const data = await CAB.load("data/runs/" + shard + ".js", "runs-" + shard);
      runs.push(data && data[id] ? data[id] : { run_id: id, missing: true });
    } catch (e) {
      runs.push({ run_id: id, missing: true });
    }
  }
  const found = runs.filter((r) => !r.missing);
  const first = found[0] || {};
  main.appendChild(el("h1", {}, found.length ? el("a", { href: CAB.mechHref(first.attention), text: first.attention }) : "Run not found",
    found.length ? " · " + (first.task || "efficiency") + " · " + first.pattern : ""));
  const context = el("div", { class: "context" });
  const scales = [...new Set(found.map((r) => r.scale))].join(", "), hws = [...new Set(found.map((r) => r.hardware))].join(", ");
  CAB.context(context, [["scale", scales || "—"], ["hardware", hws || "—"], ["runs", String(found.length)]], idx);
  main.appendChild(context);

  // several seeds: a summary first
  if (runs.length > 1) {
    const metricNames = [...new Set(found.flatMap((r) => Object.keys(r.metrics || {})))].sort((a, b) => (b === first.primary_metric) - (a === first.primary_metric) || a.localeCompare(b)).slice(0, 6);
    const tb = el("tbody");
    for (const r of runs) {
      tb.appendChild(el("tr", {}, el("td", {}, el("a", { href: "#run-" + r.run_id, text: r.run_id })),
        el("td", { text: r.attention || "" }), el("td", { text: r.task || "" }), el("td", { class: "num", text: r.seed === undefined || r.seed === null ? "" : String(r.seed) }),
        el("td", {}, r.missing ? badge("notrun", "not in this build") : badge(r.status)),
        metricNames.map((m) => el("td", { class: "num", text: r.metrics && typeof r.metrics[m] === "number" ? fmt(r.metrics[m]) : "—" }))));
    }
    main.appendChild(CAB.scrollBox(el("table", { class: "plain", id: "seeds" },
      el("thead", {}, el("tr", {}, ["run", "attention", "task", "seed", "status", ...metricNames].map((h) => el("th", { text: h })))), tb), "plainwrap"));
    if (metricNames.length) {
      const m = metricNames[0], vals = found.filter((r) => r.status === "ok" && typeof (r.metrics || {})[m] === "number").map((r) => r.metrics[m]);
      if (vals.length) {
        const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
        const sd = vals.length > 1 ? Math.sqrt(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / (vals.length - 1)) : null;
        const [meanText, sdText] = CAB.fmtMeanStd(mean, sd);
        main.appendChild(el("p", { class: "muted", text: m + ": mean " + meanText + (sdText !== null ? " ± " + sdText + " (sample std)" : "") + " over " + vals.length + " finished run(s)" }));
      }
    }
  }

  const kv = (pairs) => el("dl", { class: "kv" }, pairs.filter((p) => p[1] !== undefined && p[1] !== null && p[1] !== "").flatMap(([k, v]) => [el("dt", { text: k }), el("dd", {}, v)]));
  const pre = (obj) => el("pre", { text: typeof obj === "string" ? obj : JSON.stringify(obj, null, 2) });

  for (const r of runs) {
    const card = el("section", { class: "card", id: "run-" + r.run_id });
    if (r.missing) {
      card.appendChild(el("h2", { text: "Run " + r.run_id }));
      card.appendChild(el("p", { class: "muted", text: "This run is not in this build of the site." }));
      main.appendChild(card);
      continue;
    }
    card.appendChild(el("h2", {}, (r.attention + " · " + (r.task || "efficiency") + " · " + r.pattern + " · seed " + r.seed + " "), badge(r.status)));
    const env = r.env || {};
    const err = r.error;
    card.appendChild(kv([
      ["run id", r.run_id], ["record file", r.file], ["kind", r.kind], ["scale", r.scale], ["hardware", r.hardware],
      ["device", env.device], ["threads", env.threads !== undefined ? String(env.threads) : null],
      ["commit", env.git_commit ? env.git_commit + (env.git_dirty ? " ✱ (uncommitted changes)" : "") : "unknown"],
      ["cab", env.cab_version], ["torch", env.torch], ["python", env.python],
      ["started", r.started_at], ["duration", typeof r.duration_s === "number" ? fmt(r.duration_s) + " s" : null],
      ["early stop", r.early_stopped_at_step ? "step " + r.early_stopped_at_step : null],
      ["reason", r.status === "unsupported" ? (r.reason || "no reason recorded") : null],
    ]));
    if (env.git_dirty) {
      card.appendChild(el("div", { class: "warnbox dirty-run", text: "✱ This run came from a working tree with uncommitted changes: commit " + (env.git_commit || "?") + " does not pin the code that produced it." }));
    }
    card.appendChild(el("h3", { text: "Command" }));
    card.appendChild(CAB.commandBlock(r.command || ""));
    if (err) {
      card.appendChild(el("h3", { text: "Error" }));
      if (typeof err === "object") {
        card.appendChild(el("p", { class: "error-message" }, el("b", { text: (err.type || "error") + ": " }), String(err.message || "")));
        if (err.traceback) card.appendChild(pre(String(err.traceback)));
      } else card.appendChild(pre(String(err)));
    }
    const metrics = r.metrics || {}, info = r.metric_info || {};
    if (Object.keys(metrics).length) {
      card.appendChild(el("h3", { text: "Metrics" }));
      card.appendChild(CAB.scrollBox(el("table", { class: "plain" }, el("thead", {}, el("tr", {}, ["metric", "value", "better", "description"].map((h) => el("th", { text: h })))),
        el("tbody", {}, Object.entries(metrics).map(([k, v]) => el("tr", {}, el("td", { text: k + (k === r.primary_metric ? " (primary)" : "") }),
          el("td", { class: "num", title: typeof v === "number" ? String(v) : null, text: typeof v === "number" ? fmt(v, 6) : JSON.stringify(v) }),
          el("td", { text: info[k] ? (info[k].higher_is_better ? "higher" : "lower") : "" }), el("td", { text: info[k] ? String(info[k].description || "") : "" }))))), "plainwrap"));
    }
    const sel = r.lr_selection;
    if (sel && typeof sel === "object") {  // learning-rate selection on a validation split (cab/run/lr_selection.py)
      card.appendChild(el("h3", { text: "Learning rate" }));
      if (Array.isArray(sel.candidates)) {
        card.appendChild(el("p", { class: "muted", text: "Chosen on this seed's " + (sel.split || "validation") + " " + (sel.metric || "metric") +
          (sel.chosen !== null && sel.chosen !== undefined ? ": " + sel.chosen : ": no rate finished") + ". The other seeds train at the chosen rate." }));
        card.appendChild(CAB.scrollBox(el("table", { class: "plain lr-selection" }, el("thead", {}, el("tr", {}, ["rate", "status", "validation", "test", "train s"].map((h) => el("th", { text: h })))),
          el("tbody", {}, sel.candidates.map((c) => el("tr", { class: c.lr === sel.chosen ? "chosen" : null },
            el("td", { class: "num", text: String(c.lr) + (c.lr === sel.chosen ? " ✓" : "") }), el("td", {}, badge(c.status)),
            el("td", { class: "num", text: typeof c.validation === "number" ? fmt(c.validation, 4) : "–" }),
            el("td", { class: "num", text: typeof c.test === "number" ? fmt(c.test, 4) : "–" }),
            el("td", { class: "num", text: typeof c.train_s === "number" ? fmt(c.train_s) : "–" }))))), "plainwrap"));
      } else {
        card.appendChild(kv([["rate", sel.chosen !== null && sel.chosen !== undefined ? String(sel.chosen) : "none chosen"],
          ["chosen by", el("a", { href: CAB.runHref([sel.selected_by]), text: "run " + sel.selected_by })]]));
      }
    }
    if (Array.isArray(r.eval_history) && r.eval_history.length && r.primary_metric) {
      const m = r.primary_metric;
      card.appendChild(el("h3", { text: "Learning curve (" + (r.eval_history_split || "test") + " " + m + ")" }));
      card.appendChild(el("p", { class: "curve", text: r.eval_history.map((h) => "step " + h.step + ": " + (typeof h[m] === "number" ? fmt(h[m], 4) : "–")).join(" · ") +
        (r.restored_step ? " — scored with step " + r.restored_step + "'s weights (best validation)" : "") }));
    }
    if (r.reference_metrics && Object.keys(r.reference_metrics).length) {
      card.appendChild(el("h3", { text: "Reference (baselines)" }));
      card.appendChild(kv(Object.entries(r.reference_metrics).map(([k, v]) => [k, typeof v === "number" ? fmt(v) : JSON.stringify(v)])));
    }
    if (r.gate && typeof r.gate === "object") {  // the reference gate this record states (cab/gates.py)
      card.appendChild(el("h3", { text: "Reference gate" }));
      card.appendChild(kv(Object.entries(r.gate).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)])));
    }
    if (r.cost && Object.keys(r.cost).length) {
      card.appendChild(el("h3", { text: "Cost" }));
      const c = r.cost;
      card.appendChild(kv([["parameters", c.params !== undefined ? CAB.fmtCount(c.params) : null], ["forward FLOPs / example", c.flops_per_example !== undefined ? CAB.fmtCount(c.flops_per_example) : null],
        ["attention FLOPs / example", c.attention_flops_per_example !== undefined ? CAB.fmtCount(c.attention_flops_per_example) : null],
        ["peak memory", c.peak_memory_bytes !== undefined ? CAB.fmtBytes(c.peak_memory_bytes) + (c.memory_method ? " (" + c.memory_method + ")" : "") : null],
        ["wall time", c.wall_s !== undefined ? fmt(c.wall_s) + " s" : null], ["tokens / s", c.tokens_per_second !== undefined && c.tokens_per_second !== null ? CAB.fmtCount(c.tokens_per_second) : null],
        ["state size", c.state_size !== undefined && c.state_size !== null ? CAB.fmtCount(c.state_size) : null], ["FLOPs convention", c.flops_convention]]));
    }
    if (r.efficiency) {
      card.appendChild(el("h3", { text: "Efficiency points" }));
      const e = r.efficiency;
      card.appendChild(kv([["direction", e.direction], ["batch", e.batch], ["heads", e.num_heads], ["dim", e.dim], ["dtype", e.dtype], ["device", e.device], ["threads", e.threads]].map(([k, v]) => [k, v === undefined || v === null ? null : String(v)])));
      card.appendChild(CAB.scrollBox(el("table", { class: "plain" }, el("thead", {}, el("tr", {}, ["length", "status", "time median", "IQR", "peak memory", "FLOPs", "error"].map((h) => el("th", { text: h })))),
        el("tbody", {}, (e.points || []).map((p) => el("tr", {}, el("td", { class: "num", text: String(p.length) }), el("td", {}, badge(p.status)),
          el("td", { class: "num", text: p.time_median_s !== null && p.time_median_s !== undefined ? fmt(p.time_median_s * 1e3) + " ms" : "—" }),
          el("td", { class: "num", text: p.time_iqr_s !== null && p.time_iqr_s !== undefined ? fmt(p.time_iqr_s * 1e3) + " ms" : "—" }),
          el("td", { class: "num", text: CAB.fmtBytes(p.peak_memory_bytes) }), el("td", { class: "num", text: CAB.fmtCount(p.flops) }), el("td", { text: p.error || "" }))))), "plainwrap"));
    }
    if (r.attention_info && Object.keys(r.attention_info).length) {
      card.appendChild(el("h3", { text: "Attention runtime info" }));
      card.appendChild(pre(r.attention_info));
    }
    card.appendChild(el("details", {}, el("summary", { text: "Resolved config" }), pre(r.config || {})));
    card.appendChild(el("details", {}, el("summary", { text: "Environment" }), pre(env)));
    main.appendChild(card);
  }
  if (location.hash) { const t = document.getElementById(location.hash.slice(1)); if (t) t.scrollIntoView(); }
})();
