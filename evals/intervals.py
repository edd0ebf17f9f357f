"""95% intervals for accuracies and the chance level of multiple-choice items.

    accuracy_interval(0.62, 200)          -> (0.551, 0.684)  Wilson score, n stated
    ratio_interval(bits, bytes)           -> (bpb, lo, hi)   BPB over documents (t, delta method)
    bootstrap_interval([1, 0, 1, ...])    -> (lo, hi)        percentile bootstrap over items
    constant_scorer_chance(golds)         -> share of items whose gold is choice 0

Reports and tables call these; every accuracy is shown with its n (the number of items scored;
by default the whole task).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054


METHOD = "Wilson score"
RATIO_METHOD = "t interval over documents (ratio estimator, delta method)"


def accuracy_interval(acc: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of an accuracy over n items (stays inside [0, 1] and keeps a
    width at acc = 0 or 1, unlike acc +- z sqrt(acc (1 - acc) / n)). The one interval for
    accuracies in the suite: eval.json, Table 3 and the report's claims all use it."""
    if n <= 0:
        raise ValueError(f"accuracy_interval: n={n}; expected at least one item")
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"accuracy_interval: acc={acc}; expected a fraction in [0, 1]")
    denom = 1 + z * z / n
    centre = (acc + z * z / (2 * n)) / denom
    half = z * math.sqrt(acc * (1.0 - acc) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(num: Sequence[float], den: Sequence[float]) -> tuple[float, float, float]:
    """(R, lo, hi): R = sum(num) / sum(den) over n units (BPB: bits and bytes per document) with
    a 95% t interval from the linearised (delta-method) variance of a ratio estimator,
    var(R) = n / (n - 1) * sum((num_i - R den_i)^2) / sum(den)^2. Needs n >= 2 units."""
    from scipy.special import stdtrit  # t quantile; scipy.stats costs ~1.5 s more to import

    n = len(num)
    if n != len(den) or n < 2:
        raise ValueError(f"ratio_interval: need >= 2 paired units, got {n} and {len(den)}")
    total = float(sum(den))
    if total <= 0:
        raise ValueError("ratio_interval: the denominators sum to 0")
    r = float(sum(num)) / total
    var = n / (n - 1) * sum((a - r * b) ** 2 for a, b in zip(num, den)) / total**2
    half = float(stdtrit(n - 1, 0.975)) * math.sqrt(var)
    return r, r - half, r + half


def bootstrap_interval(correct: Sequence[float], iters: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over items of the mean of `correct` (0/1 per item); deterministic."""
    xs = [float(x) for x in correct]
    if not xs:
        raise ValueError("bootstrap_interval: no items")
    rng = random.Random(seed)
    n = len(xs)
    means = sorted(sum(xs[rng.randrange(n)] for _ in range(n)) / n for _ in range(iters))
    lo = means[int(math.floor((1 - level) / 2 * (iters - 1)))]
    hi = means[int(math.ceil((1 + level) / 2 * (iters - 1)))]
    return lo, hi


def constant_scorer_chance(golds: Sequence[int]) -> float:
    """Accuracy of a scorer that gives every choice the same score, under lm-eval's rule that
    the first of tied choices wins: the share of items whose gold is choice 0."""
    if not golds:
        return 0.0
    return sum(1 for g in golds if g == 0) / len(golds)


def format_acc(acc: float | None, n: int | None) -> str:
    """'62.0 [55.3, 68.7] n=200' (percent); 'n/a' for None."""
    if acc is None:
        return "n/a"
    if not n:
        return f"{100 * acc:.1f}"
    lo, hi = accuracy_interval(acc, n)
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] n={n}"
