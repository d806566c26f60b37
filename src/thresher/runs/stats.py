"""The one statistics helper behind every study's comparison table.

Results are reported as mean ± 95% confidence half-width over seeds, using the t-distribution
(few seeds make the normal approximation too optimistic). Methods run on the same seeds are
compared with a paired t-test, which removes the seed-to-seed variance they share.

With a single value there is no spread to estimate: std, ci95, low and high are NaN (not 0,
which would claim a certainty we don't have) and ``format_mean_ci`` prints "n/a".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Mean and 95% CI of one metric over seeds; low/high are the CI bounds."""

    n: int
    mean: float
    std: float  # sample std (ddof=1)
    ci95: float  # half-width
    low: float
    high: float


@dataclass(frozen=True)
class PairedResult:
    """Paired t-test of a - b over matched seeds; ci95 is the half-width around mean_diff."""

    n: int
    mean_diff: float
    ci95: float
    t: float
    p: float


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ValueError(f"{what}: need at least one value")
    return array


def _t_half_width(std: float, n: int) -> float:
    if n < 2:
        return math.nan
    from scipy import stats  # ~1 s to import; only pay for it when a table is made

    return float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± t-based 95% CI half-width of ``values`` (one per seed)."""
    x = _as_array(values, "summarize")
    n = int(x.size)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    ci = _t_half_width(std, n)
    return Summary(n=n, mean=mean, std=std, ci95=ci, low=mean - ci, high=mean + ci)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedResult:
    """Paired t-test of ``a`` against ``b``; element i of each must come from the same seed.

    If every difference is the same (e.g. identical methods) the test is degenerate: t is 0
    with p = 1 when they are all zero, else ±inf with p = 0, instead of scipy's NaN.
    With one pair nothing can be tested and ci95, t and p are NaN.
    """
    x, y = _as_array(a, "paired_test a"), _as_array(b, "paired_test b")
    if x.size != y.size:
        raise ValueError(f"paired_test needs equal lengths (one value per shared seed), "
                         f"got {x.size} and {y.size}")
    d = x - y
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return PairedResult(n=n, mean_diff=mean, ci95=math.nan, t=math.nan, p=math.nan)
    std = float(d.std(ddof=1))
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))  # float rounding, e.g. 0.3-0.2 vs 0.4-0.3
    if std <= tol:
        if abs(mean) <= tol:
            return PairedResult(n=n, mean_diff=mean, ci95=0.0, t=0.0, p=1.0)
        return PairedResult(n=n, mean_diff=mean, ci95=0.0, t=math.copysign(math.inf, mean), p=0.0)
    from scipy import stats

    result = stats.ttest_rel(x, y)
    return PairedResult(n=n, mean_diff=mean, ci95=_t_half_width(std, n),
                        t=float(result.statistic), p=float(result.pvalue))


def format_mean_ci(summary: Summary, digits: int = 2, scale: float = 1.0) -> str:
    """``"97.12 ± 0.31"``; ``scale=100`` turns fractions into percentages."""
    ci = "n/a" if math.isnan(summary.ci95) else f"{summary.ci95 * scale:.{digits}f}"
    return f"{summary.mean * scale:.{digits}f} ± {ci}"
