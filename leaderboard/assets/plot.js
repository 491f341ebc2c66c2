/* A small SVG plotter for the leaderboard: log or linear axes, lines and scatter points, failure
 * markers (OOM, timeout) pinned to the top edge at their x, and a Pareto frontier. Hand-written so
 * the site needs no library and works offline. Text goes in through textContent only. */
"use strict";
(function () {
  const { el } = window.CAB;
  const PALETTE = ["#2457c5", "#d1495b", "#2a9d8f", "#e9a23b", "#7b4fb3", "#1b998b", "#c05a1a", "#5c6f82",
    "#d45087", "#3d8c40", "#8f6b3a", "#0f6fa8"];

  function scale(lo, hi, a, b, log) {
    const f = log ? Math.log : (v) => v;
    const [l, h] = [f(lo), f(hi)];
    const span = h - l || 1;
    return (v) => a + ((f(v) - l) / span) * (b - a);
  }

  /** Tick values: powers of `base` on a log axis (with 2 and 5 between decades when the range is
   * short), round steps on a linear one. */
  function ticks(lo, hi, log, base) {
    const out = [];
    if (log) {
      const b = base || 10;
      const k0 = Math.floor(Math.log(lo) / Math.log(b) + 1e-9), k1 = Math.ceil(Math.log(hi) / Math.log(b) - 1e-9);
      const step = Math.max(1, Math.ceil((k1 - k0) / 8));
      for (let k = k0; k <= k1; k += step) out.push(Math.pow(b, k));
      if (b === 10 && k1 - k0 <= 2) for (let k = k0; k < k1; k++) out.push(2 * Math.pow(10, k), 5 * Math.pow(10, k));
      return out.filter((v) => v >= lo * 0.999 && v <= hi * 1.001).sort((x, y) => x - y);
    }
    const span = hi - lo || Math.abs(hi) || 1;
    const raw = span / 5, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= 6) || mag * 10;
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function tickLabel(v, log, base, fmt) {
    if (fmt) return fmt(v);
    if (log && base === 2) return v >= 1024 ? (v / 1024) + "K" : String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(0).replace("e+", "e");
    return String(Number(v.toPrecision(3)));
  }

  function extent(values, log, pad) {
    let vs = values.filter((v) => v !== null && v !== undefined && isFinite(v) && (!log || v > 0));
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

  /**
   * opts: {title, width, height, xLabel, yLabel, xLog, yLog, xBase, yBase, xFmt, yFmt, labels (bool),
   *        series: [{name, color, dashed, line, points: [{x, y, title, href, frontier}], fails: [{x, label, title}]}],
   *        frontier: [{x, y}]}
   */
  function plot(opts) {
    const W = opts.width || 520, H = opts.height || 340;
    const m = { l: 62, r: 16, t: opts.title ? 30 : 14, b: 44 };
    const pts = opts.series.flatMap((s) => s.points);
    const failXs = opts.series.flatMap((s) => (s.fails || []).map((f) => f.x));
    const [x0, x1] = opts.xDomain || extent(pts.map((p) => p.x).concat(failXs), opts.xLog, 0.04);
    const [y0, y1] = opts.yDomain || extent(pts.map((p) => p.y), opts.yLog, 0.06);
    const hasFails = failXs.length > 0;
    const top = m.t + (hasFails ? 16 : 0);
    const X = scale(x0, x1, m.l, W - m.r, opts.xLog), Y = scale(y0, y1, H - m.b, top, opts.yLog);
    const svg = el("svg:svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "plot" });
    if (opts.title) svg.appendChild(el("svg:text", { x: m.l, y: 16, "font-weight": 600, text: opts.title }));

    const grid = el("svg:g", { class: "grid" }), axis = el("svg:g", { class: "axis" });
    for (const t of ticks(x0, x1, opts.xLog, opts.xBase)) {
      const x = X(t);
      grid.appendChild(el("svg:line", { x1: x, x2: x, y1: top, y2: H - m.b }));
      axis.appendChild(el("svg:line", { x1: x, x2: x, y1: H - m.b, y2: H - m.b + 4 }));
      axis.appendChild(el("svg:text", { x, y: H - m.b + 16, "text-anchor": "middle", text: tickLabel(t, opts.xLog, opts.xBase, opts.xFmt) }));
    }
    for (const t of ticks(y0, y1, opts.yLog, opts.yBase)) {
      const y = Y(t);
      grid.appendChild(el("svg:line", { x1: m.l, x2: W - m.r, y1: y, y2: y }));
      axis.appendChild(el("svg:line", { x1: m.l - 4, x2: m.l, y1: y, y2: y }));
      axis.appendChild(el("svg:text", { x: m.l - 6, y: y + 4, "text-anchor": "end", text: tickLabel(t, opts.yLog, opts.yBase, opts.yFmt) }));
    }
    axis.appendChild(el("svg:path", { d: `M${m.l},${top}V${H - m.b}H${W - m.r}`, fill: "none" }));
    axis.appendChild(el("svg:text", { class: "lbl", x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle", text: opts.xLabel }));
    axis.appendChild(el("svg:text", { class: "lbl", x: 14, y: (top + H - m.b) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(top + H - m.b) / 2})`, text: opts.yLabel }));
    svg.appendChild(grid);
    svg.appendChild(axis);

    if (opts.frontier && opts.frontier.length > 1) {
      const d = opts.frontier.map((p, i) => (i ? "L" : "M") + X(p.x).toFixed(1) + "," + Y(p.y).toFixed(1)).join("");
      svg.appendChild(el("svg:path", { class: "frontier", d, fill: "none", stroke: "#1d2433", "stroke-width": 1.2, "stroke-dasharray": "5 4", opacity: 0.6 }));
    }

    const legend = el("div", { class: "legend" });
    opts.series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      const g = el("svg:g", { class: "series", "data-name": s.name });
      const ps = s.points.filter((p) => p.x > 0 || !opts.xLog).filter((p) => p.y > 0 || !opts.yLog);
      if (s.line && ps.length > 1) {
        const d = ps.map((p, j) => (j ? "L" : "M") + X(p.x).toFixed(1) + "," + Y(p.y).toFixed(1)).join("");
        g.appendChild(el("svg:path", { d, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": s.dashed ? "6 3" : null }));
      }
      for (const p of ps) {
        const dot = el("svg:circle", { class: p.frontier ? "pt frontier-pt" : "pt", cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1),
          r: p.frontier ? 5.5 : 3.5, fill: p.frontier ? color : "#fff", stroke: color, "stroke-width": 2 },
        el("svg:title", { text: p.title || `${s.name}: (${p.x}, ${p.y})` }));
        g.appendChild(p.href ? el("svg:a", { href: p.href }, dot) : dot);
        if (opts.labels) {
          // names near the right edge go to the left of their point so they stay inside the plot
          const right = X(p.x) > W - m.r - 90;
          g.appendChild(el("svg:text", { x: X(p.x) + (right ? -7 : 7), y: Y(p.y) - 6, "font-size": 10, "text-anchor": right ? "end" : "start", text: s.name }));
        }
      }
      for (const f of s.fails || []) {
        const x = X(f.x), y = m.t + 6;
        g.appendChild(el("svg:g", { class: "fail" },
          el("svg:path", { d: `M${x - 4},${y - 4}L${x + 4},${y + 4}M${x - 4},${y + 4}L${x + 4},${y - 4}`, stroke: color, "stroke-width": 2.2 }),
          el("svg:text", { x: x + 6, y: y + 4, "font-size": 9, fill: color, text: f.label }),
          el("svg:title", { text: f.title || `${s.name}: ${f.label} at ${f.x}` })));
      }
      svg.appendChild(g);
      legend.appendChild(el("span", {}, el("span", { class: "sw", style: `background:${color}` }), s.name));
    });
    return el("div", { class: "plot" }, svg, opts.legend === false ? null : legend);
  }

  /** Pareto frontier for `better` metric y and a cost x (lower better unless xHigherIsBetter):
   * the points no other point beats on both. Returns the frontier sorted by x; ties kept once. */
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
})();
