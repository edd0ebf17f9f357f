"""95% intervals for report numbers: seed spread (t), accuracies (Wilson), differences (Welch),
power-law exponents (OLS in log space), and the verdict rule the claims table uses.

Accuracies use evals/intervals.py's Wilson interval, the one eval.json stores, so a number has
the same interval everywhere in the report. Every function here is plain arithmetic on numbers
the run directories already hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hnetbench.evals.intervals import accuracy_interval
from scipy.special import ndtri, stdtrit  # quantiles (scipy.stats: ~1.5 s more import)

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float  # point estimate (mean, proportion, difference, slope)
    lo: float | None  # None: no interval (one seed, no item count)
    hi: float | None
    n: int  # seeds, items or points behind it

    @property
    def known(self) -> bool:
        return self.lo is not None and self.hi is not None

    def text(self, fmt: str = ".3f", scale: float = 1.0) -> str:
        """`1.234 [1.200, 1.268]`, or `1.234 (n=1)` without an interval."""
        v = format(self.value * scale, fmt)
        if not self.known:
            return f"{v} (no interval)"
        return f"{v} [{format(self.lo * scale, fmt)}, {format(self.hi * scale, fmt)}]"


def _t(df: int) -> float:
    return float(stdtrit(df, 0.5 + LEVEL / 2))


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean over seeds with a t interval (none for a single seed)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_interval: no values")
    m = sum(xs) / n
    if n < 2:
        return Interval(m, None, None, n)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    h = _t(n - 1) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n)


def proportion_interval(p: float, n: int | None, stderr: float | None = None) -> Interval:
    """An accuracy over n items: Wilson score interval; with only a stderr, p +- z stderr."""
    z = float(ndtri(0.5 + LEVEL / 2))
    if n and n > 0:  # the same Wilson interval eval.json stores (evals/intervals.py)
        lo, hi = accuracy_interval(p, n)
        return Interval(p, lo, hi, n)
    if stderr is not None and stderr > 0:
        return Interval(p, max(0.0, p - z * stderr), min(1.0, p + z * stderr), 0)
    return Interval(p, None, None, 0)


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) - mean(b) with a Welch t interval; none unless both sides have >= 2 values."""
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    d = ma - mb
    if len(a) < 2 or len(b) < 2:
        return Interval(d, None, None, min(len(a), len(b)))
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(d, d, d, min(len(a), len(b)))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    h = float(stdtrit(df, 0.5 + LEVEL / 2)) * se
    return Interval(d, d - h, d + h, min(len(a), len(b)))


def proportion_difference(a: Interval, b: Interval) -> Interval:
    """Difference of two independent accuracies (normal approximation from their intervals)."""
    d = a.value - b.value
    if not (a.known and b.known):
        return Interval(d, None, None, min(a.n, b.n))
    z = float(ndtri(0.5 + LEVEL / 2))
    se = math.hypot((a.hi - a.lo) / (2 * z), (b.hi - b.lo) / (2 * z))
    return Interval(d, d - z * se, d + z * se, min(a.n, b.n))


@dataclass(frozen=True)
class PowerLaw:
    """log10 y = log10 a + b log10 x, fitted by least squares; b with its t interval."""

    a: float
    b: Interval
    r2: float
    n: int
    se_b: float | None

    def __call__(self, x: float) -> float:
        return self.a * x**self.b.value


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> PowerLaw | None:
    """None with fewer than 2 distinct x (within 5% counts as the same: a BPE run's bytes vary
    by a few tokens); no interval on the exponent with fewer than 3 points."""
    pts = [(math.log10(x), math.log10(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    n = len(pts)
    xs_sorted = sorted(p[0] for p in pts)
    if n < 2 or xs_sorted[-1] - xs_sorted[0] < math.log10(1.05):
        return None
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    a = my - b * mx
    resid = [p[1] - (a + b * p[0]) for p in pts]
    ss_res = sum(r * r for r in resid)
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    if n < 3:
        return PowerLaw(10**a, Interval(b, None, None, n), r2, n, None)
    se = math.sqrt(ss_res / (n - 2) / sxx)
    h = _t(n - 2) * se
    return PowerLaw(10**a, Interval(b, b - h, b + h, n), r2, n, se)


def slope_difference(f1: PowerLaw, f2: PowerLaw) -> Interval:
    """Exponent of f1 minus f2 (independent fits), t interval with the smaller df."""
    d = f1.b.value - f2.b.value
    if f1.se_b is None or f2.se_b is None:
        return Interval(d, None, None, min(f1.n, f2.n))
    se = math.hypot(f1.se_b, f2.se_b)
    h = _t(min(f1.n, f2.n) - 2) * se
    return Interval(d, d - h, d + h, min(f1.n, f2.n))


SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported", "contradicted", "inconclusive", "not measured")


def verdict(iv: Interval | None, positive_means_claim: bool = True) -> str:
    """A claim "quantity > 0" is supported when the whole interval is above 0, contradicted when
    it is wholly below, inconclusive otherwise (also with no interval at all)."""
    if iv is None:
        return NOT_MEASURED
    if not iv.known:
        return INCONCLUSIVE
    lo, hi = (iv.lo, iv.hi) if positive_means_claim else (-iv.hi, -iv.lo)
    if lo > 0:
        return SUPPORTED
    if hi < 0:
        return CONTRADICTED
    return INCONCLUSIVE
