"""Bjøntegaard delta rate (BD-rate) of two rate-quality curves.

BD-rate is the average difference in bitrate between two curves over the quality range
both cover, in percent: negative means the test codec needs fewer bits than the anchor
for the same quality. As in VCEG-M33 and its successors, the log of the bitrate is fitted
as a function of quality and the two fits are integrated over the overlapping quality
interval; ``BD = exp(mean difference of log rate) - 1``.

The fit is piecewise cubic Hermite interpolation (PCHIP, Fritsch-Carlson slopes, the
interpolant of scipy's `PchipInterpolator`, written out here in numpy) rather than
VCEG-M33's cubic polynomial: a cubic needs four points and the usual evaluation has
three or four rates, and PCHIP stays monotonic between points, where a polynomial
through four points can swing. The integral of each cubic piece is exact. A curve whose
quality does not rise with rate at some point is reduced to its upper envelope first
(a point with no better quality than a cheaper one is dropped and reported), since
log rate must be a function of quality.

For a test curve that is the anchor with every rate multiplied by k, the result is
exactly (k - 1)·100 %: a constant added to log rate passes through the interpolation
unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["BDRate", "bd_rate", "envelope", "pchip_integral", "pchip_slopes"]


@dataclass(frozen=True)
class BDRate:
    """The BD-rate in percent (None when it cannot be computed: `note` says why)."""

    percent: float | None
    note: str = ""
    overlap: tuple[float, float] | None = None   # the metric's interval integrated over, (low, high)


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots (x strictly increasing), as scipy's PCHIP."""
    h = np.diff(x)
    delta = np.diff(y) / h
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _end_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """The shape-preserving three-point end slope (scipy's `_edge_case`)."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


def pchip_integral(x: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    """The exact integral from a to b (within [x0, xn]) of the PCHIP interpolant of (x, y)."""
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        lo, hi = max(a, x[k]), min(b, x[k + 1])
        if hi <= lo:
            continue
        h = x[k + 1] - x[k]
        delta = (y[k + 1] - y[k]) / h
        c2 = (3 * delta - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * delta) / h ** 2
        # p(s) = y_k + d_k s + c2 s^2 + c3 s^3 with s = x - x_k
        antiderivative = np.polynomial.Polynomial([0.0, y[k], d[k] / 2, c2 / 3, c3 / 4])
        total += antiderivative(hi - x[k]) - antiderivative(lo - x[k])
    return float(total)


def envelope(points: Sequence[tuple[float, float]]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(kept, dropped): the points by rate, keeping each whose quality beats every cheaper point's."""
    kept: list[tuple[float, float]] = []
    dropped: list[tuple[float, float]] = []
    for rate, quality in sorted(points):
        if kept and quality <= kept[-1][1]:
            dropped.append((rate, quality))
        else:
            kept.append((rate, quality))
    return kept, dropped


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]], *,
            higher_is_better: bool = True) -> BDRate:
    """BD-rate of `test` against `anchor`, each a list of (bitrate, quality) points.

    `higher_is_better=False` for distances such as LPIPS (the quality axis is negated).
    """
    sign = 1.0 if higher_is_better else -1.0
    curves = []
    notes = []
    for name, points in (("anchor", anchor), ("test", test)):
        usable = [(r, sign * q) for r, q in points if q is not None and math.isfinite(q) and r > 0]
        kept, dropped = envelope(usable)
        if dropped:
            notes.append(f"{name}: {len(dropped)} point(s) with no better quality than a lower rate left out")
        if len(kept) < 2:
            return BDRate(None, f"{name}: fewer than two usable points")
        curves.append((np.array([q for _, q in kept]), np.log(np.array([r for r, _ in kept]))))
    (qa, la), (qt, lt) = curves

    def in_metric(a: float, b: float) -> tuple[float, float]:
        """The fit's quality interval (a, b) in the metric's own values, low first."""
        return tuple(sorted((float(sign * a), float(sign * b))))

    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        (tl, th), (al, ah) = in_metric(qt[0], qt[-1]), in_metric(qa[0], qa[-1])
        return BDRate(None, f"no overlap: the test covers {tl:.4g} to {th:.4g}, the anchor {al:.4g} to {ah:.4g}")
    mean_difference = (pchip_integral(qt, lt, lo, hi) - pchip_integral(qa, la, lo, hi)) / (hi - lo)
    return BDRate(float(math.expm1(mean_difference) * 100), "; ".join(notes), in_metric(lo, hi))
