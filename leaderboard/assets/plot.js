/* A small SVG plotter for the leaderboard, hand-written so the site needs no library and works
 * offline. Text goes in through textContent only.
 *
 *   - sized to the pixels it is given (pages pass their container's width and redraw on resize), so
 *     text stays 11 px on a phone and plots use a wide screen;
 *   - tick labels on every axis: decades on a log axis, then 2 and 5, then every digit, then plain
 *     linear steps, until at least two ticks fall inside a short range;
 *   - 48 distinguishable series: 12 colours × 4 marker shapes × 4 dash patterns; a legend whose
 *     entries highlight their series on hover, focus or click;
 *   - point labels placed greedily where they collide with no other label or point, else left out
 *     (the point keeps its tooltip, and the plot says how many were left out);
 *   - error bars (yLo..yHi), horizontal reference lines (chance, baselines), a Pareto frontier;
 *   - failures (OOM, timeout, failed) in a strip above the plot, one row per kind, one mark per length
 *     with the count, never on top of each other and never cut at the edge.
 */
"use strict";
(function () {
  const { el } = window.CAB;
  // colour-blind-aware colours first (Okabe–Ito), then darker companions
  const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7a5195", "#8c6d31",
    "#c0392b", "#2e7d32", "#5c6f82", "#b8860b"];
  const MARKERS = ["circle", "square", "triangle", "diamond"];
  const DASHES = [null, "7 3", "2 3", "9 3 2 3"];
  const CHAR_W = 6.2, LINE_H = 12;  // estimated text box of the 11 px system font

  /** The i-th series' look: colour cycles fastest, then marker, then dash. */
  function styleOf(i) {
    const round = Math.floor(i / PALETTE.length);
    return { color: PALETTE[i % PALETTE.length], marker: MARKERS[(i + round) % MARKERS.length], dash: DASHES[round % DASHES.length] };
  }

  function scale(lo, hi, a, b, log) {
    const f = log ? Math.log : (v) => v;
    const [l, h] = [f(lo), f(hi)];
    const span = h - l || 1;
    return (v) => a + ((f(v) - l) / span) * (b - a);
  }

  function linearTicks(lo, hi) {
    const out = [];
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= 6) || mag * 10;
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  /** Ticks inside [lo, hi]: at least two wherever the range allows. */
  function ticks(lo, hi, log, base) {
    if (!log) return linearTicks(lo, hi);
    const b = base || 10;
    const inside = (vs) => [...new Set(vs.map((v) => Number(v.toPrecision(12))))].filter((v) => v >= lo * 0.999 && v <= hi * 1.001).sort((x, y) => x - y);
    const k0 = Math.floor(Math.log(lo) / Math.log(b) - 1e-9), k1 = Math.ceil(Math.log(hi) / Math.log(b) + 1e-9);
    const step = Math.max(1, Math.ceil((k1 - k0) / 8));
    const decades = [];
    for (let k = k0; k <= k1; k += step) decades.push(Math.pow(b, k));
    let out = inside(decades);
    if (out.length >= 2 || b !== 10) return out.length >= 2 ? out : inside(linearTicks(lo, hi));
    const mult = (ms) => { const vs = []; for (let k = k0; k <= k1; k++) for (const m of ms) vs.push(m * Math.pow(10, k)); return inside(vs); };
    out = mult([1, 2, 5]);
    if (out.length < 2) out = mult([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    if (out.length < 2) out = linearTicks(lo, hi).filter((v) => v > 0);
    return out;
  }

  function tickLabel(v, log, base, fmt) {
    if (fmt) return fmt(v);
    if (log && base === 2) return v >= 1024 ? (v / 1024) + "K" : String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1).replace("e+", "e").replace(".0e", "e");
    return String(Number(v.toPrecision(3)));
  }

  function extent(values, log, pad) {
    const vs = values.filter((v) => v !== null && v !== undefined && isFinite(v) && (!log || v > 0));
    if (!vs.length) return log ? [1, 10] : [0, 1];
    let lo = Math.min(...vs), hi = Math.max(...vs);
    if (log) {
      if (lo === hi) { lo /= 2; hi *= 2; }
      const r = Math.pow(hi / lo, pad);
      return [lo / r, hi * r];
    }
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 0.5; hi += Math.abs(hi) * 0.1 || 0.5; }
    const p = (hi - lo) * pad;
    return [lo - p, hi + p];
  }

  function markerShape(kind, x, y, r, attrs) {
    if (kind === "square") return el("svg:rect", Object.assign({ x: (x - r * 0.9).toFixed(1), y: (y - r * 0.9).toFixed(1), width: (1.8 * r).toFixed(1), height: (1.8 * r).toFixed(1) }, attrs));
    if (kind === "triangle") return el("svg:path", Object.assign({ d: `M${x.toFixed(1)},${(y - r * 1.15).toFixed(1)}L${(x + r).toFixed(1)},${(y + r * 0.75).toFixed(1)}L${(x - r).toFixed(1)},${(y + r * 0.75).toFixed(1)}Z` }, attrs));
    if (kind === "diamond") return el("svg:path", Object.assign({ d: `M${x.toFixed(1)},${(y - r * 1.2).toFixed(1)}L${(x + r * 1.1).toFixed(1)},${y.toFixed(1)}L${x.toFixed(1)},${(y + r * 1.2).toFixed(1)}L${(x - r * 1.1).toFixed(1)},${y.toFixed(1)}Z` }, attrs));
    return el("svg:circle", Object.assign({ cx: x.toFixed(1), cy: y.toFixed(1), r }, attrs));
  }

  /** A small inline swatch (line + marker) for legends. */
  function swatch(st) {
    return el("svg:svg", { class: "sw", width: 26, height: 12, viewBox: "0 0 26 12", "aria-hidden": "true" },
      el("svg:line", { x1: 1, x2: 25, y1: 6, y2: 6, stroke: st.color, "stroke-width": 2, "stroke-dasharray": st.dash || null }),
      markerShape(st.marker || "circle", 13, 6, 3.2, { fill: "#fff", stroke: st.color, "stroke-width": 1.8 }));
  }

  const overlaps = (a, b) => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;

  /**
   * opts: {title, width, height, xLabel, yLabel, xLog, yLog, xBase, yBase, xFmt, yFmt, labels (bool), legend (bool),
   *        series: [{name, color, marker, dash, line, baseline, highlight,
   *                  points: [{x, y, yLo, yHi, title, href, frontier, label}], fails: [{x, label, title}]}],
   *        frontier: [{x, y}], hlines: [{y, label, kind}], highlighting (bool: dim series without `highlight`)}
   */
  function plot(opts) {
    const W = Math.max(240, Math.round(opts.width || 520));
    const H = Math.round(opts.height || Math.min(440, Math.max(250, W * 0.6)));
    const series = opts.series.map((s, i) => Object.assign({}, styleOf(i), s));
    const pts = series.flatMap((s) => s.points);
    let hlines = (opts.hlines || []).filter((h) => h.y !== null && h.y !== undefined && isFinite(h.y) && (!opts.yLog || h.y > 0));
    // a reference line far outside the data (a unigram perplexity of 210 above models at 30) would squash
    // the points: it is named at the plot's edge instead of stretching the axis
    const dataY = extent(pts.flatMap((p) => [p.y, p.yLo, p.yHi]), opts.yLog, 0);
    const f = opts.yLog ? Math.log : (v) => v;
    const span = Math.max(f(dataY[1]) - f(dataY[0]), 1e-12);
    const offscale = opts.yDomain ? [] : hlines.filter((h) => Math.max(f(dataY[1]), f(h.y)) - Math.min(f(dataY[0]), f(h.y)) > 2.5 * span && pts.length);
    hlines = hlines.filter((h) => !offscale.includes(h));
    const fails = series.flatMap((s) => (s.fails || []).map((f) => Object.assign({ series: s.name }, f)));
    const [x0, x1] = opts.xDomain || extent(pts.map((p) => p.x).concat(fails.map((f) => f.x)), opts.xLog, 0.05);
    const [y0, y1] = opts.yDomain || extent(pts.flatMap((p) => [p.y, p.yLo, p.yHi]).concat(hlines.map((h) => h.y)), opts.yLog, 0.07);
    const yTicks = ticks(y0, y1, opts.yLog, opts.yBase);
    const yLabels = yTicks.map((t) => tickLabel(t, opts.yLog, opts.yBase, opts.yFmt));
    const m = { l: Math.max(40, 20 + CHAR_W * Math.max(...yLabels.map((s) => s.length), 1)), r: 14, t: opts.title ? 28 : 12, b: 42 };
    const failKinds = [...new Set(fails.map((f) => f.label))];
    const top = m.t + (failKinds.length ? failKinds.length * 14 + 6 : 0);
    const X = scale(x0, x1, m.l, W - m.r, opts.xLog), Y = scale(y0, y1, H - m.b, top, opts.yLog);
    const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "plot" });
    if (opts.title) svg.appendChild(el("svg:text", { class: "title", x: m.l, y: 17, "font-weight": 600, text: opts.title }));

    // axes and ticks (x labels thinned until they fit)
    const grid = el("svg:g", { class: "grid" }), axis = el("svg:g", { class: "axis" });
    let xTicks = ticks(x0, x1, opts.xLog, opts.xBase);
    const xText = (t) => tickLabel(t, opts.xLog, opts.xBase, opts.xFmt);
    const widest = Math.max(...xTicks.map((t) => xText(t).length), 1) * CHAR_W + 8;
    const every = Math.max(1, Math.ceil((xTicks.length * widest) / (W - m.l - m.r)));
    xTicks = xTicks.filter((_, i) => i % every === 0);
    for (const t of xTicks) {
      const x = X(t);
      grid.appendChild(el("svg:line", { x1: x, x2: x, y1: top, y2: H - m.b }));
      axis.appendChild(el("svg:line", { x1: x, x2: x, y1: H - m.b, y2: H - m.b + 4 }));
      axis.appendChild(el("svg:text", { class: "tick", x, y: H - m.b + 16, "text-anchor": "middle", text: xText(t) }));
    }
    yTicks.forEach((t, i) => {
      const y = Y(t);
      grid.appendChild(el("svg:line", { x1: m.l, x2: W - m.r, y1: y, y2: y }));
      axis.appendChild(el("svg:line", { x1: m.l - 4, x2: m.l, y1: y, y2: y }));
      axis.appendChild(el("svg:text", { class: "tick", x: m.l - 6, y: y + 4, "text-anchor": "end", text: yLabels[i] }));
    });
    axis.appendChild(el("svg:path", { d: `M${m.l},${top}V${H - m.b}H${W - m.r}`, fill: "none" }));
    axis.appendChild(el("svg:text", { class: "lbl", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle", text: opts.xLabel }));
    axis.appendChild(el("svg:text", { class: "lbl", x: 12, y: (top + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 12 ${(top + H - m.b) / 2})`, text: opts.yLabel }));
    svg.appendChild(grid);
    svg.appendChild(axis);

    // reference lines: chance, trivial baselines, the reference mechanism
    const placed = [];  // label boxes already drawn
    const refs = el("svg:g", { class: "refs" });
    for (const h of hlines.slice().sort((a, b) => Y(a.y) - Y(b.y))) {
      const y = Y(h.y);
      refs.appendChild(el("svg:line", { class: "hline " + (h.kind || ""), x1: m.l, x2: W - m.r, y1: y, y2: y },
        el("svg:title", { text: h.label + ": " + (opts.yFmt ? opts.yFmt(h.y) : String(Number(h.y.toPrecision(4)))) })));
      const w = h.label.length * CHAR_W;
      let ly = y - 3;
      for (let k = 0; k < 4 && placed.some((b) => overlaps(b, { x0: W - m.r - w, x1: W - m.r, y0: ly - 10, y1: ly + 1 })); k++) ly += 12;
      placed.push({ x0: W - m.r - w, x1: W - m.r, y0: ly - 10, y1: ly + 1 });
      refs.appendChild(el("svg:text", { class: "hlabel " + (h.kind || ""), x: W - m.r - 2, y: ly, "text-anchor": "end", text: h.label }));
    }
    offscale.forEach((h, i) => {
      const above = h.y > dataY[1];
      refs.appendChild(el("svg:text", { class: "hlabel offscale " + (h.kind || ""), x: W - m.r - 2, y: above ? top + 11 + 12 * i : H - m.b - 5 - 12 * i, "text-anchor": "end",
        text: (above ? "↑ " : "↓ ") + h.label + " " + (opts.yFmt ? opts.yFmt(h.y) : String(Number(h.y.toPrecision(4)))) + " (off the axis)" }));
    });
    svg.appendChild(refs);

    if (opts.frontier && opts.frontier.length > 1) {
      const d = opts.frontier.map((p, i) => (i ? "L" : "M") + X(p.x).toFixed(1) + "," + Y(p.y).toFixed(1)).join("");
      svg.appendChild(el("svg:path", { class: "frontier", d, fill: "none", stroke: "#1d2433", "stroke-width": 1.2, "stroke-dasharray": "5 4", opacity: 0.65 }));
    }

    const visible = (p) => (p.x > 0 || !opts.xLog) && (p.y > 0 || !opts.yLog);
    const obstacles = pts.filter(visible).map((p) => ({ x0: X(p.x) - 5, x1: X(p.x) + 5, y0: Y(p.y) - 5, y1: Y(p.y) + 5, p }));
    const toLabel = [];
    const groups = series.map((s, i) => {
      const g = el("svg:g", { class: "series" + (s.baseline ? " baseline" : "") + (opts.highlighting && s.highlight ? " on-search" : ""), "data-name": s.name, "data-i": i });
      const ps = s.points.filter(visible);
      if (s.line && ps.length > 1) {
        const d = ps.map((p, j) => (j ? "L" : "M") + X(p.x).toFixed(1) + "," + Y(p.y).toFixed(1)).join("");
        g.appendChild(el("svg:path", { class: "line", d, fill: "none", stroke: s.color, "stroke-width": s.baseline ? 2.2 : 1.8, "stroke-dasharray": s.dash || null }));
      }
      for (const p of ps) {
        const x = X(p.x), y = Y(p.y);
        if (p.yLo !== undefined && p.yHi !== undefined && p.yLo !== null && p.yHi !== null && isFinite(p.yLo) && isFinite(p.yHi)) {
          const a = Y(Math.max(p.yLo, opts.yLog ? y0 : -Infinity)), b = Y(p.yHi);
          g.appendChild(el("svg:path", { class: "err", d: `M${x.toFixed(1)},${a.toFixed(1)}V${b.toFixed(1)}M${(x - 3).toFixed(1)},${a.toFixed(1)}h6M${(x - 3).toFixed(1)},${b.toFixed(1)}h6`, stroke: s.color, "stroke-width": 1.2, fill: "none" }));
        }
        const dot = markerShape(s.marker, x, y, p.frontier ? 5.5 : 3.6, { class: p.frontier ? "pt frontier-pt" : "pt",
          fill: p.frontier ? s.color : "#fff", stroke: s.color, "stroke-width": 2 });
        dot.appendChild(el("svg:title", { text: p.title || `${s.name}: (${p.x}, ${p.y})` }));
        g.appendChild(p.href ? el("svg:a", { href: p.href }, dot) : dot);
        if (opts.labels && p.label !== false) toLabel.push({ p, s, g, x, y, text: p.label || s.name });
      }
      return g;
    });

    // labels: the frontier and the highlighted first, then top to bottom; each takes the first free spot
    let omitted = 0;
    toLabel.sort((a, b) => (b.p.frontier ? 1 : 0) - (a.p.frontier ? 1 : 0) || (b.s.highlight ? 1 : 0) - (a.s.highlight ? 1 : 0) || a.y - b.y);
    for (const L of toLabel) {
      const w = L.text.length * CHAR_W, h = LINE_H;
      const spots = [[8, 4, "start"], [-8, 4, "end"], [0, -9, "middle"], [0, 17, "middle"], [8, -7, "start"], [8, 14, "start"], [-8, -7, "end"], [-8, 14, "end"]];
      let done = false;
      for (const [dx, dy, anchor] of spots) {
        const tx = L.x + dx, ty = L.y + dy;
        const bx0 = anchor === "start" ? tx : anchor === "end" ? tx - w : tx - w / 2;
        const box = { x0: bx0, x1: bx0 + w, y0: ty - h + 2, y1: ty + 2 };
        if (box.x0 < m.l + 2 || box.x1 > W - m.r || box.y0 < top || box.y1 > H - m.b) continue;
        if (placed.some((b) => overlaps(b, box)) || obstacles.some((o) => o.p !== L.p && overlaps(o, box))) continue;
        placed.push(box);
        L.g.appendChild(el("svg:text", { class: "plabel", x: tx.toFixed(1), y: ty.toFixed(1), "text-anchor": anchor, fill: L.s.color, text: L.text }));
        done = true;
        break;
      }
      if (!done) omitted++;
    }
    groups.forEach((g) => svg.appendChild(g));

    // failures: a strip above the plot, one row per kind, one mark per length with its count
    failKinds.forEach((kind, row) => {
      const y = m.t + 7 + row * 14;
      const strip = el("svg:g", { class: "fail-row", "data-kind": kind });
      strip.appendChild(el("svg:text", { class: "fail-kind", x: m.l - 6, y: y + 4, "text-anchor": "end", text: kind }));
      const byX = new Map();
      for (const f of fails.filter((f) => f.label === kind)) { if (!byX.has(f.x)) byX.set(f.x, []); byX.get(f.x).push(f); }
      for (const [fx, fs] of byX) {
        const x = Math.min(Math.max(X(fx), m.l + 4), W - m.r - 4);
        const text = fs.length > 1 ? "×" + fs.length : "";
        const right = x + 6 + text.length * CHAR_W > W - m.r;
        strip.appendChild(el("svg:g", { class: "fail", "data-x": fx },
          el("svg:path", { d: `M${x - 3.5},${y - 3.5}L${x + 3.5},${y + 3.5}M${x - 3.5},${y + 3.5}L${x + 3.5},${y - 3.5}`, stroke: "#b3261e", "stroke-width": 2 }),
          text ? el("svg:text", { class: "fail-n", x: right ? x - 6 : x + 6, y: y + 4, "text-anchor": right ? "end" : "start", text }) : null,
          el("svg:title", { text: kind + " at " + fx + ": " + fs.map((f) => f.title || f.series).join("; ") })));
      }
      svg.appendChild(strip);
    });

    // the box is as wide as its plot (a long legend wraps under it rather than widening it)
    const box = el("div", { class: "plot" + (opts.highlighting ? " searching" : ""), style: "width:" + (W + 18) + "px" }, svg);
    if (omitted) box.appendChild(el("p", { class: "plot-note", text: omitted + " label(s) left out where they would overlap: hover a point, or see the table." }));
    if (opts.legend !== false) {
      const legend = el("div", { class: "legend", role: "list" });
      series.forEach((s, i) => {
        const item = el("button", { type: "button", class: "lg" + (s.baseline ? " baseline" : ""), role: "listitem", "data-i": i, "aria-pressed": "false",
          title: "highlight " + s.name }, swatch(s), el("span", { text: s.name }));
        const on = () => { svg.classList.add("hl"); groups[i].classList.add("on"); item.classList.add("on"); };
        const off = () => { if (item.getAttribute("aria-pressed") === "true") return; groups[i].classList.remove("on"); item.classList.remove("on");
          if (!legend.querySelector(".lg.on")) svg.classList.remove("hl"); };
        item.addEventListener("mouseenter", on); item.addEventListener("focus", on);
        item.addEventListener("mouseleave", off); item.addEventListener("blur", off);
        item.addEventListener("click", () => { const pinned = item.getAttribute("aria-pressed") !== "true"; item.setAttribute("aria-pressed", String(pinned)); if (pinned) on(); else off(); });
        legend.appendChild(item);
      });
      box.appendChild(legend);
    }
    return box;
  }

  /** Pareto frontier for metric y and cost x (lower cost better unless xHigherIsBetter): the points no
   * other point beats on both, sorted by x. Always computed over every point of the plot. */
  function pareto(points, yHigherIsBetter, xHigherIsBetter) {
    const valid = points.filter((p) => isFinite(p.x) && isFinite(p.y));
    const sx = xHigherIsBetter ? -1 : 1, sy = yHigherIsBetter ? -1 : 1;
    const sorted = valid.slice().sort((a, b) => sx * (a.x - b.x) || sy * (a.y - b.y));
    const front = [];
    let best = Infinity;
    for (const p of sorted) {
      if (sy * p.y < best) { front.push(p); best = sy * p.y; }
    }
    return front;
  }

  window.CAB.plot = plot;
  window.CAB.pareto = pareto;
  window.CAB.PALETTE = PALETTE;
  window.CAB.styleOf = styleOf;
  window.CAB.swatch = swatch;
  window.CAB.ticks = ticks;
})();
