"""Derived efficiency figures from measured points (pure arithmetic: no torch, so the leaderboard
builder can use them without importing it).

- scaling exponent: the least-squares slope of log(cost) on log(length) over the longest points;
- efficiency length (CAB): where a quadratic fit of the baseline meets a linear fit of the method;
- crossing: where the measured curves cross, interpolated on log-log axes.
"""

from __future__ import annotations

import math
import statistics

def _ok_values(points: list[dict], key: str) -> list[tuple[float, float]]:
    """(length, value) of ok points with a positive value for `key`, sorted by length."""
    out = []
    for p in points:
        value = p.get(key)
        if p.get("status", "ok") == "ok" and value is not None and value > 0:
            out.append((float(p["length"]), float(value)))
    return sorted(out)


def scaling_exponent(points: list[dict], key: str, top: int = 3, min_length: int | None = None) -> tuple[float | None, list[int]]:
    """Least-squares slope of log(cost) on log(length) over the `top` longest ok points (those of
    at least `min_length`), and the lengths used. cost ∝ L^k gives k: 1 linear, 2 quadratic.
    None with fewer than two usable points."""
    values = [(n, v) for n, v in _ok_values(points, key) if min_length is None or n >= min_length][-top:]
    if len(values) < 2:
        return None, [int(n) for n, _ in values]
    xs = [math.log(n) for n, _ in values]
    ys = [math.log(v) for _, v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, [int(n) for n, _ in values]


QUADRATIC_BASELINE_MIN_EXPONENT = 1.5  # CAB's fit presumes a quadratic baseline


def _polyfit(xs: list[float], ys: list[float], degree: int) -> list[float]:
    """Least-squares polynomial coefficients, highest power first (numpy.polyfit's order)."""
    import numpy as np

    return [float(c) for c in np.polyfit(np.asarray(xs), np.asarray(ys), degree)]


def cab_fit_length(
    method_points: list[dict], baseline_points: list[dict], key: str, drop_shortest_method: bool = False
) -> float | None:
    """CAB's efficiency length (Zhang et al. 2023, scripts/efficiency_length/efficiency_length.py):
    fit the baseline's cost with a·L² + b·L + c and the method's with d·L + e (each over its own ok
    points), and return the larger real root of a·L² + (b−d)·L + (c−e) = 0, the length beyond
    which the fitted method is cheaper. None: too few points (3 baseline, 2 method), or the fits
    never meet at a positive length, or the baseline is not superlinear in `key` (its scaling
    exponent below 1.5, e.g. SDPA's memory: a quadratic fit of a line meets the method's line at a
    meaningless length, such as hundreds of millions). `drop_shortest_method`: leave the method's shortest point out
    of its line, as CAB's script does for time (its unsynchronised timings at L=256 were launch
    overhead); with it, CAB's cost.xlsx gives its published ABC figures, 1,877 (time) and 70 (memory).
    Our timings are synchronised, so `efficiency_lengths` keeps every point."""
    base = _ok_values(baseline_points, key)
    meth = _ok_values(method_points, key)[1 if drop_shortest_method else 0:]
    if len(base) < 3 or len(meth) < 2:
        return None
    exponent, _ = scaling_exponent(baseline_points, key)
    if exponent is None or exponent < QUADRATIC_BASELINE_MIN_EXPONENT:
        return None
    a, b, c = _polyfit([n for n, _ in base], [v for _, v in base], 2)
    d, e = _polyfit([n for n, _ in meth], [v for _, v in meth], 1)
    qa, qb, qc = a, b - d, c - e
    if qa == 0:
        roots = [-qc / qb] if qb else []
    else:
        disc = qb * qb - 4 * qa * qc
        if disc < 0:
            return None
        roots = [(-qb + s * math.sqrt(disc)) / (2 * qa) for s in (1, -1)]
    roots = [r for r in roots if r > 0]
    return max(roots) if roots else None


def crossing_length(method_points: list[dict], baseline_points: list[dict], key: str) -> tuple[float | None, str]:
    """Where the measured curves cross: over the lengths where both are ok, the length from which
    the method stays at or below the baseline, interpolated linearly in log(length) on
    log(method/baseline) between the two measured lengths around the crossing.
    Returns (length, note): note "crossed"; "below" (cheaper at every common length: None, the
    crossing lies below the shortest); "above" (never cheaper from some length on up to the
    longest: None); "insufficient" (fewer than two common lengths: None)."""
    method = dict(_ok_values(method_points, key))
    base = dict(_ok_values(baseline_points, key))
    common = sorted(set(method) & set(base))
    if len(common) < 2:
        return None, "insufficient"
    logr = [math.log(method[n] / base[n]) for n in common]  # < 0: the method is cheaper
    if logr[-1] > 0:
        return None, "above"
    i = len(common) - 1
    while i > 0 and logr[i - 1] <= 0:
        i -= 1
    if i == 0:
        return None, "below"
    # logr[i-1] > 0 >= logr[i]: cross between common[i-1] and common[i]
    t = logr[i - 1] / (logr[i - 1] - logr[i])
    lo, hi = math.log(common[i - 1]), math.log(common[i])
    return math.exp(lo + t * (hi - lo)), "crossed"


def efficiency_lengths(method_points: list[dict], baseline_points: list[dict], key: str) -> dict[str, float | None]:
    """Efficiency length of a method against a baseline for `key` ("time_median_s" or
    "peak_memory_bytes"): {"cab_fit": CAB's fitted crossover (`cab_fit_length`),
    "crossing": the interpolated crossing of the measured curves (`crossing_length`)}."""
    if key not in ("time_median_s", "peak_memory_bytes"):
        raise ValueError(f"key must be 'time_median_s' or 'peak_memory_bytes', not {key!r}")
    return {
        "cab_fit": cab_fit_length(method_points, baseline_points, key),
        "crossing": crossing_length(method_points, baseline_points, key)[0],
    }
