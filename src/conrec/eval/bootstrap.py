"""Percentile bootstrap over evaluation points: confidence intervals and paired differences.

Why: a few hundred evaluation points make differences of a few points of FHR noise. Every model is
scored on the *same* points, so the honest comparison is paired: each resample draws one set of
point indices and evaluates both models on it, which cancels the per-point difficulty both share.

Values are per-point arrays from :func:`conrec.eval.metrics.point_values`; NaN marks a point
outside the metric's population (LUF, LIF), so a resample's statistic is the mean over its
non-NaN draws (the ratio of the resampled sum to the resampled count). A resample that draws no
point of the population gives NaN and is ignored by the percentiles.

Points are resampled independently (not per user): under the per-user protocol one user
contributes several correlated points, so those intervals are somewhat optimistic.
"""

from __future__ import annotations

import numpy as np


def resample_indices(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples, n) point indices drawn with replacement; the same seed gives the same draws, so
    models evaluated with one matrix are paired."""
    if n < 1:
        raise ValueError(f"cannot bootstrap over {n} points")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One mean per resample (NaN-aware: the mean over the drawn points inside the population)."""
    values = np.asarray(values, dtype=np.float64)
    if idx.size and idx.max() >= values.shape[0]:
        raise ValueError(f"indices reach {idx.max()} but there are {values.shape[0]} values")
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    total = filled[idx].sum(axis=1)
    count = present[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap statistics (NaN draws ignored)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    finite = stats[~np.isnan(stats)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return float(lo), float(hi)


def mean_ci(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the (NaN-aware) mean of ``values`` over the resamples ``idx``."""
    return percentile_interval(resampled_means(values, idx), level)


def paired_diff_ci(values: np.ndarray, reference: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``mean(values) - mean(reference)`` with both means taken on the same resamples."""
    if np.shape(values) != np.shape(reference):
        raise ValueError(f"paired values must align: {np.shape(values)} vs {np.shape(reference)}")
    return percentile_interval(resampled_means(values, idx) - resampled_means(reference, idx), level)
