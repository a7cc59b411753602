"""Percentile bootstrap over evaluation points or over users: confidence intervals and paired differences.

Why: a few hundred evaluation points make differences of a few points of FHR noise. Every model is
scored on the *same* points, so the honest comparison is paired: each resample is one draw used for
every model, which cancels the per-point difficulty they share.

Values are per-point arrays from :func:`conrec.eval.metrics.point_values`; NaN marks a point
outside the metric's population (LUF, LIF), so a resample's statistic is the ratio of the resampled
sum to the resampled count over the population. A resample that draws no point of the population
gives NaN and is ignored by the percentiles.

What is resampled (:func:`resample`): when every user holds one evaluated point (the global split),
the points, as independent draws (:func:`resample_indices`; these draws are what every figure made
before user resampling used, so those figures do not move). When some user holds more than one
(``data.split.protocol: per_user``: 3,501 MovieLens-100K test points of 793 users, up to 112 each),
one user's points are correlated (the same tastes, overlapping histories), and resampling them as
independent gave intervals 2.3 to 2.9 times too narrow (the metrics audit of 7 December 2026). There the *users* are
resampled (:func:`resample_users`): each resample draws users with replacement and takes all of a
drawn user's points; the statistic is again a ratio of sums. With one point per user the two are the
same estimator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class UserResamples:
    """User-cluster resamples: ``counts[b, u]``: how often resample ``b`` drew user ``u``; ``user_of[i]``: the
    user index of point ``i``. Every model evaluated with one object gets the same draws (paired)."""

    counts: np.ndarray  # (resamples, n_users) int64
    user_of: np.ndarray  # (n_points,) int64 in [0, n_users)


Draws = np.ndarray | UserResamples
"""Point indices ``(resamples, n)`` (:func:`resample_indices`) or user-cluster resamples (:func:`resample_users`)."""


def resample_indices(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples, n) point indices drawn with replacement; the same seed gives the same draws, so
    models evaluated with one matrix are paired."""
    if n < 1:
        raise ValueError(f"cannot bootstrap over {n} points")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resample_users(users: Sequence[object], resamples: int = 1000, seed: int = 0) -> UserResamples:
    """Draw the distinct users of ``users`` (one entry per point) with replacement, ``resamples`` times."""
    if len(users) < 1:
        raise ValueError("cannot bootstrap over 0 points")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    _, user_of = np.unique(np.asarray([str(u) for u in users], dtype=object), return_inverse=True)
    n_users = int(user_of.max()) + 1
    drawn = np.random.default_rng(seed).integers(0, n_users, size=(resamples, n_users))
    # counts[b, u] by one bincount over (resample, user) cells
    flat = (drawn + n_users * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=resamples * n_users).reshape(resamples, n_users)
    return UserResamples(counts=counts, user_of=user_of.astype(np.int64))


def resampled_unit(users: Sequence[object] | None) -> Literal["points", "users"]:
    """What :func:`resample` resamples for these points' users: ``"users"`` when one holds more than one point."""
    return "users" if users is not None and len(set(map(str, users))) < len(users) else "points"


def resample(n: int, users: Sequence[object] | None = None, resamples: int = 1000, seed: int = 0) -> Draws:
    """The resamples of ``n`` points whose users are ``users`` (aligned; None: unknown, points are resampled):
    users when one holds more than one point, else the points (:func:`resample_indices`, the same draws as before)."""
    if users is not None and len(users) != n:
        raise ValueError(f"{len(users)} user ids for {n} points")
    if resampled_unit(users) == "users":
        assert users is not None
        return resample_users(users, resamples, seed)
    return resample_indices(n, resamples, seed)


def resampled_means(values: np.ndarray, idx: Draws) -> np.ndarray:
    """One mean per resample (NaN-aware: the mean over the drawn points inside the population)."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    if isinstance(idx, UserResamples):
        if idx.user_of.shape[0] != values.shape[0]:
            raise ValueError(f"user resamples cover {idx.user_of.shape[0]} points but there are {values.shape[0]} values")
        n_users = idx.counts.shape[1]
        # per user: sum and count of its points in the population; a resample adds them once per draw of the user
        total = idx.counts @ np.bincount(idx.user_of, weights=filled, minlength=n_users)
        count = idx.counts @ np.bincount(idx.user_of, weights=present.astype(np.float64), minlength=n_users)
    else:
        if idx.size and idx.max() >= values.shape[0]:
            raise ValueError(f"indices reach {idx.max()} but there are {values.shape[0]} values")
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


def mean_ci(values: np.ndarray, idx: Draws, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the (NaN-aware) mean of ``values`` over the resamples ``idx``."""
    return percentile_interval(resampled_means(values, idx), level)


def paired_diff_ci(values: np.ndarray, reference: np.ndarray, idx: Draws, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``mean(values) - mean(reference)`` with both means taken on the same resamples."""
    if np.shape(values) != np.shape(reference):
        raise ValueError(f"paired values must align: {np.shape(values)} vs {np.shape(reference)}")
    return percentile_interval(resampled_means(values, idx) - resampled_means(reference, idx), level)
