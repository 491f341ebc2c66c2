/* cab leaderboard: shared helpers (no libraries).
 *
 * Safety rule for every page: record strings reach the DOM only through textContent or setAttribute
 * on non-URL attributes (el() below); links are built from a fixed page name plus encodeURIComponent.
 * Nothing here assigns HTML strings to the DOM.
 *
 * Data arrives as <script src="data/....js"> files that assign JSON to window.CAB_DATA[key]; a script
 * tag loads from file:// where fetch() does not.
 */
"use strict";
window.CAB = (function () {
  const SVGNS = "http://www.w3.org/2000/svg";

  /** el("a", {href: "...", class: "x"}, child, "text", ...): an element; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  const loaded = {};
  /** Load data/<name>.js once; resolves to window.CAB_DATA[key]. */
  function load(path, key) {
    if (!loaded[path]) {
      loaded[path] = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = path;
        s.onload = () => resolve((window.CAB_DATA || {})[key]);
        s.onerror = () => reject(new Error("could not load " + path));
        document.head.appendChild(s);
      });
    }
    return loaded[path];
  }
  const index = () => load("data/index.js", "index");
  const mechanisms = () => load("data/mechanisms.js", "mechanisms");
  const mechanism = (file) => load("data/mech/" + file + ".js", "mech-" + file);

  /** URL hash state, so a filtered view can be shared: #pattern=causal_self&task=mqar */
  function getState() {
    const out = {};
    new URLSearchParams(location.hash.slice(1)).forEach((v, k) => { out[k] = v; });
    return out;
  }
  function setState(state) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (v !== null && v !== undefined && v !== "") p.set(k, v);
    history.replaceState(null, "", "#" + p.toString());
  }

  /** Four significant digits, scientific outside [1e-3, 1e5). */
  function fmt(x, digits) {
    if (x === null || x === undefined || !isFinite(x)) return "—";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return String(Number(x.toPrecision(digits || 4)));
  }

  /** A mean and its spread over seeds, rounded to the precision the seeds support: the standard
   * deviation to two significant digits, the mean to the same decimal place (0.9336 ± 0.042 reads
   * 0.934 ± 0.042). One seed (no spread): three significant digits. Returns [mean, std] as text. */
  function fmtMeanStd(mean, std) {
    if (mean === null || mean === undefined || !isFinite(mean)) return ["—", null];
    if (std === null || std === undefined || !isFinite(std)) return [fmt(mean, 3), null];
    const a = Math.max(Math.abs(mean), std);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return [mean.toExponential(2), std.toExponential(1)];
    if (std === 0) return [fmt(mean, 4), "0"];
    const decimals = Math.min(8, Math.max(0, 1 - Math.floor(Math.log10(std))));
    return [mean.toFixed(decimals), std.toFixed(decimals)];
  }

  function fmtBytes(b) {
    if (b === null || b === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : String(b)) + " " + units[i];
  }
  function fmtCount(x) {
    if (x === null || x === undefined) return "—";
    const units = ["", "K", "M", "G", "T", "P"];
    let i = 0;
    while (Math.abs(x) >= 1000 && i < units.length - 1) { x /= 1000; i++; }
    return (i ? x.toFixed(x < 10 ? 2 : 1) : String(Math.round(x))) + units[i];
  }

  const STATUS_TEXT = { ok: "ok", unsupported: "unsupported", failed: "failed", oom: "OOM", nan: "NaN", timeout: "timeout", notrun: "not run" };
  const PATTERN_TEXT = { noncausal_self: "noncausal self", causal_self: "causal self", noncausal_cross: "noncausal cross", causal_cross: "causal cross" };
  const PATTERNS = ["noncausal_self", "causal_self", "noncausal_cross", "causal_cross"];
  function badge(status, title) {
    return el("span", { class: "badge " + status, title: title || null, text: STATUS_TEXT[status] || status });
  }
  /** The mark beside a number some of whose seeds ran from a working tree with uncommitted changes. */
  function dirtyMark(k, n) {
    if (!k) return null;
    return el("span", { class: "dirty", title: k + " of " + n + " run(s) came from a working tree with uncommitted changes: their commit does not pin the code",
      "aria-label": k + " of " + n + " runs from uncommitted code", text: "✱" });
  }

  /** Shared page furniture: the active nav link and the build stamp. */
  async function header(active) {
    document.querySelectorAll("header.top nav a").forEach((a) => { if (a.dataset.page === active) { a.classList.add("active"); a.setAttribute("aria-current", "page"); } });
    const idx = await index();
    const stamp = document.getElementById("stamp");
    if (stamp && idx) stamp.textContent = idx.stamp + " · " + idx.records + " records";
    return idx;
  }

  /** "scale cpu · hardware cpu-2c": every page says where its numbers come from. */
  function context(node, parts, idx) {
    node.textContent = "";
    parts.forEach(([k, v], i) => {
      if (i) node.appendChild(document.createTextNode(" · "));
      node.appendChild(document.createTextNode(k + " "));
      node.appendChild(el("b", { text: v }));
    });
    node.appendChild(document.createTextNode(" · site built " + idx.built_at + (idx.latest_run ? " · latest run " + idx.latest_run : "")));
  }

  function fillSelect(select, options, value) {
    select.textContent = "";
    for (const o of options) {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      select.appendChild(el("option", { value: v, text: label }));
    }
    if (options.some((o) => (Array.isArray(o) ? o[0] : o) === value)) select.value = value;
    return select.value;
  }

  /** Downloads of what is shown: columns [{key}] (the CSV header is the key, as in the JSON), rows of objects. */
  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  function csvCell(v) {
    if (v === null || v === undefined) return "";
    const s = Array.isArray(v) ? v.join(" ") : String(v);
    // a leading = + - @ makes spreadsheets evaluate a cell: quote it as text
    const safe = /^[=+\-@]/.test(s) && isNaN(Number(s)) ? "'" + s : s;
    return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
  }
  function csv(columns, rows) {
    return [columns.map((c) => csvCell(c.key)).join(","), ...rows.map((r) => columns.map((c) => csvCell(r[c.key])).join(","))].join("\n") + "\n";
  }
  /** "Download view: CSV · JSON" plus the full data set (every record, every run), on every page that has a table. */
  function downloadButtons(container, basename, getColumnsRows) {
    container.appendChild(el("button", { type: "button", id: "dl-csv", title: "the rows and columns shown, as CSV (headers = the JSON keys)", onclick: () => {
      const [cols, rows] = getColumnsRows();
      download(basename() + ".csv", csv(cols, rows), "text/csv");
    }, text: "Download CSV" }));
    container.appendChild(el("button", { type: "button", id: "dl-json", title: "the rows and columns shown, as JSON", onclick: () => {
      const [cols, rows] = getColumnsRows();
      const keys = cols.map((c) => c.key);
      download(basename() + ".json", JSON.stringify(rows.map((r) => Object.fromEntries(keys.map((k) => [k, r[k] === undefined ? null : r[k]]))), null, 1), "application/json");
    }, text: "Download JSON" }));
  }
  /** Links to the full data set written by the build (data/records.jsonl, data/runs.csv, data/efficiency.csv). */
  function fullData(idx) {
    const files = (idx && idx.downloads) || [];
    if (!files.length) return null;
    return el("p", { class: "fulldata" }, "Full data set: ", files.map((f, i) => [i ? " · " : "",
      el("a", { href: "data/" + f.file, download: f.file, title: f.what, text: f.file }), el("span", { class: "muted", text: " (" + fmtBytes(f.bytes) + ")" })]));
  }

  /** Sort rows by key(row): best first for the column's direction, missing values always last. */
  function sortRows(rows, key, higherIsBetter, reversed) {
    const sign = (higherIsBetter ? -1 : 1) * (reversed ? -1 : 1);
    return rows.slice().sort((a, b) => {
      const x = key(a), y = key(b);
      const xm = x === null || x === undefined || (typeof x === "number" && !isFinite(x));
      const ym = y === null || y === undefined || (typeof y === "number" && !isFinite(y));
      if (xm || ym) return xm === ym ? 0 : xm ? 1 : -1;
      if (typeof x === "string") return (reversed ? -1 : 1) * x.localeCompare(y);
      return sign * (x - y);
    });
  }

  /** A sortable column header: a button (keyboard: Tab, Enter, Space) inside the th, the direction
   * drawn (▼ best first / ▲ reversed) and stated in aria-sort, each change announced. */
  let live = null;
  function announce(text) {
    if (!live) {
      live = el("div", { id: "announce", class: "sr-only", role: "status", "aria-live": "polite" });
      document.body.appendChild(live);
    }
    live.textContent = text;
  }
  function sortHeader(o) {
    // o: {label, sub, key, sorted ("best" | "reversed" | null), string (a name column), onSort, title, cls, extra: [nodes]}
    const arrow = o.sorted ? (o.sorted === "best" ? "▼" : "▲") : "";
    const state = o.sorted ? (o.string ? (o.sorted === "best" ? "A→Z" : "Z→A") : (o.sorted === "best" ? "best first" : "worst first")) : "";
    const th = el("th", { class: ["sortable", o.sorted ? "sorted" : "", o.cls || ""].join(" ").trim(), "data-key": o.key, title: o.title || null, scope: "col",
      "aria-sort": o.sorted ? ((o.string ? o.sorted === "best" : (o.sorted === "best") === !o.hib) ? "ascending" : "descending") : "none" },
    el("button", { type: "button", class: "sort", onclick: () => o.onSort(), "aria-label": "sort by " + o.label + (o.sorted ? " (now " + state + "; press to reverse)" : "") },
      el("span", { class: "lbl", text: o.label }), ...(o.extra || []),
      o.sub ? el("span", { class: "dir", text: o.sub }) : null,
      el("span", { class: "arrow", "aria-hidden": "true", text: arrow ? arrow + " " + state : "" })));
    return th;
  }

  function runHref(ids) {
    return "run.html?ids=" + ids.map(encodeURIComponent).join(",");
  }
  function mechHref(name) {
    return "mechanism.html#name=" + encodeURIComponent(name);
  }

  /** A button that copies `text` (a command) to the clipboard; where the clipboard is refused
   * (some file:// set-ups), it selects the text so Ctrl+C copies it. */
  function copyButton(text, target) {
    const b = el("button", { type: "button", class: "copy", title: "copy to the clipboard", text: "Copy" });
    b.addEventListener("click", async () => {
      let ok = false;
      try { await navigator.clipboard.writeText(text); ok = true; } catch (e) { ok = false; }
      if (!ok) {
        const ta = el("textarea", { class: "sr-only", readonly: "readonly" });
        ta.value = text;
        document.body.appendChild(ta);
        ta.select();
        try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
        ta.remove();
      }
      if (!ok && target) { const r = document.createRange(); r.selectNodeContents(target); const s = getSelection(); s.removeAllRanges(); s.addRange(r); }
      b.textContent = ok ? "Copied" : "Selected: press Ctrl+C";
      b.classList.toggle("done", ok);
      setTimeout(() => { b.textContent = "Copy"; b.classList.remove("done"); }, 2500);
    });
    return b;
  }
  /** A command in a <pre> with its copy button. */
  function commandBlock(text, cls) {
    const pre = el("pre", { class: "command" + (cls ? " " + cls : ""), text });
    return el("div", { class: "cmd" }, pre, copyButton(text, pre));
  }

  /** Width available to a plot inside `node` (columns side by side when there is room). */
  function plotWidth(node, columns) {
    let w = document.documentElement.clientWidth - 32;
    if (node && node.clientWidth) {
      const cs = getComputedStyle(node);
      w = node.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    }
    w = Math.max(260, w);
    const n = columns && w >= 900 ? columns : 1;
    return Math.floor((w - (n - 1) * 16) / n) - 22;  // a plot's box adds 8 px padding and 1 px border a side
  }
  /** Call fn again when the window's width changes (plots are drawn to their pixel width). */
  function onResize(fn) {
    let last = window.innerWidth, t = null;
    window.addEventListener("resize", () => {
      if (Math.abs(window.innerWidth - last) < 24) return;
      clearTimeout(t);
      t = setTimeout(() => { last = window.innerWidth; fn(); }, 150);
    });
  }
  /** A table inside a box that scrolls by itself (the page never scrolls sideways). */
  function scrollBox(table, cls) {
    return el("div", { class: "tablewrap" + (cls ? " " + cls : "") }, table);
  }

  return { el, load, index, mechanisms, mechanism, getState, setState, fmt, fmtMeanStd, fmtBytes, fmtCount, badge, dirtyMark,
    header, context, fillSelect, download, csv, downloadButtons, fullData, sortRows, sortHeader, announce, runHref, mechHref,
    copyButton, commandBlock, plotWidth, onResize, scrollBox, STATUS_TEXT, PATTERN_TEXT, PATTERNS };
})();
