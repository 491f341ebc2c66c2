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
    for (const c of children.flat()) {
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
  function badge(status, title) {
    return el("span", { class: "badge " + status, title: title || null, text: STATUS_TEXT[status] || status });
  }

  /** Shared page furniture: the active nav link and the build stamp. */
  async function header(active) {
    document.querySelectorAll("header.top nav a").forEach((a) => { if (a.dataset.page === active) a.classList.add("active"); });
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

  /** Downloads of what is shown: columns [{key, label}], rows of plain objects. */
  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a", { href: url, download: name });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
  function csv(columns, rows) {
    const q = (v) => {
      if (v === null || v === undefined) return "";
      const s = String(v);
      // a leading = + - @ makes spreadsheets evaluate a cell: quote it as text
      const safe = /^[=+\-@]/.test(s) && isNaN(Number(s)) ? "'" + s : s;
      return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
    };
    return [columns.map((c) => q(c.label)).join(","), ...rows.map((r) => columns.map((c) => q(r[c.key])).join(","))].join("\n") + "\n";
  }
  function downloadButtons(container, basename, getColumnsRows) {
    container.appendChild(el("button", { type: "button", id: "dl-csv", onclick: () => {
      const [cols, rows] = getColumnsRows();
      download(basename() + ".csv", csv(cols, rows), "text/csv");
    }, text: "Download CSV" }));
    container.appendChild(el("button", { type: "button", id: "dl-json", onclick: () => {
      const [, rows] = getColumnsRows();
      download(basename() + ".json", JSON.stringify(rows, null, 1), "application/json");
    }, text: "Download JSON" }));
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

  function runHref(ids) {
    return "run.html?ids=" + ids.map(encodeURIComponent).join(",");
  }

  return { el, load, index, getState, setState, fmt, fmtBytes, fmtCount, badge, header, context, fillSelect,
    download, csv, downloadButtons, sortRows, runHref, STATUS_TEXT };
})();
