"""Rank correlations that studies use to say "A goes with B": one home for Spearman's rho and Kendall's tau.

Both ignore pairs with a NaN and return NaN when nothing is left to rank (fewer than two pairs, or one side
constant), instead of SciPy's warning and NaN. ``spearman(..., groups=)`` is stratified: ranks are taken within
each group and pooled, so only within-group orderings count (seeds of different difficulty do not correlate by
accident).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _rankable(x: np.ndarray, y: np.ndarray) -> bool:
    return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0


def kendall(x, y) -> float:
    """Kendall's tau-b of x and y (NaN pairs dropped; NaN if fewer than two pairs or a constant side)."""
    x, y = _pairs(x, y)
    return float(stats.kendalltau(x, y).statistic) if _rankable(x, y) else float("nan")


def spearman(x, y, groups=None) -> float:
    """Spearman's rho (average ranks for ties); see :func:`spearman_test` for the p-value and groups."""
    return spearman_test(x, y, groups)[0]


def spearman_test(x, y, groups=None) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value. With ``groups``, ranks are centred and scaled within each
    group and their pooled Pearson correlation is the statistic; groups whose x or y is constant carry no
    information and drop out."""
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    groups = np.zeros(len(x), dtype=int) if groups is None else np.asarray(groups).ravel()
    if not (len(x) == len(y) == len(groups)):
        raise ValueError("x, y and groups must have the same length")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, groups = x[ok], y[ok], groups[ok]
    if len(np.unique(groups)) == 1:
        if not _rankable(x, y):
            return float("nan"), float("nan")
        res = stats.spearmanr(x, y)
        return float(res.statistic), float(res.pvalue)
    rx, ry = [], []
    for g in np.unique(groups):
        sel = groups == g
        if not _rankable(x[sel], y[sel]):
            continue
        for src, dst in ((x[sel], rx), (y[sel], ry)):
            r = stats.rankdata(src)
            dst.append((r - r.mean()) / len(r))
    if not rx:
        return float("nan"), float("nan")
    a, b = np.concatenate(rx), np.concatenate(ry)
    if len(a) < 3:
        return float("nan"), float("nan")
    res = stats.pearsonr(a, b)  # Pearson on the pooled within-group ranks: the stratified Spearman
    return float(res.statistic), float(res.pvalue)
