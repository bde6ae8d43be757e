"""Paired comparisons by seed: mean difference, t-interval, p-value, the detectable effect.

Two models trained with the same seeds share data order, initialisation outside the changed
blocks and sampling noise, so their metric differences seed by seed are the quantity to test
(a paired t-test), not the two spreads side by side. Verdicts never say more than the interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8


def detectable_effect(
    sd: float, n: int, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest true mean difference a two-sided paired t-test at ``alpha`` detects with
    probability ``power``, for differences with standard deviation ``sd`` over ``n`` pairs
    (noncentral t). None when it cannot be computed (n < 2 or sd not positive)."""
    if n < 2 or not sd > 0:
        return None
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(delta: float) -> float:
        nc = delta / (sd / math.sqrt(n))
        wrong_side = stats.nct.cdf(-crit, df, nc)  # negligible for nc > 0; scipy may give NaN
        return stats.nct.sf(crit, df, nc) + np.nan_to_num(wrong_side) - power

    hi = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n)
    while shortfall(hi) < 0:  # the t-test needs more than the normal approximation
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-10 * sd))


def paired(
    ours: Mapping[int, float],
    base: Mapping[int, float],
    lower_is_better: bool = True,
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """``ours − base`` paired by seed: n, differences, mean, SD, (1−alpha) t-interval, two-sided
    p-value, the detectable effect and a verdict that never says more than the interval:
    "supported" (the interval excludes 0 in the improving direction), "contradicted" (excludes 0
    the other way) or "not resolved at n = …"."""
    seeds = sorted(ours.keys() & base.keys())
    diffs = np.array([ours[s] - base[s] for s in seeds], dtype=float)
    n = len(diffs)
    out: dict[str, Any] = {
        "seeds": seeds,
        "n": n,
        "differences": diffs.tolist(),
        "mean_difference": float(diffs.mean()) if n else None,
    }
    if n < 2:
        return {
            **out,
            "sd": None,
            "interval": None,
            "p_value": None,
            "detectable_effect": None,
            "verdict": f"not resolved at n = {n}",
        }
    sd = float(diffs.std(ddof=1))
    test = stats.ttest_1samp(diffs, 0.0) if sd > 0 else None  # identical differences: no spread
    lo, hi = test.confidence_interval(1 - alpha) if test else (diffs.mean(), diffs.mean())
    better = hi < 0 if lower_is_better else lo > 0
    worse = lo > 0 if lower_is_better else hi < 0
    verdict = "supported" if better else "contradicted" if worse else f"not resolved at n = {n}"
    return {
        **out,
        "sd": sd,
        "interval": [float(lo), float(hi)],
        "confidence": 1 - alpha,
        "p_value": float(test.pvalue) if test else None,
        "detectable_effect": detectable_effect(sd, n, alpha),
        "verdict": verdict,
    }
