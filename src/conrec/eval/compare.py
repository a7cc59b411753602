"""Confidence intervals and paired differences against the best baseline, added to metrics rows.

Why a separate step: every model's per-point values must be resampled with the *same* draws
(:mod:`conrec.eval.bootstrap`: the points, or the users when one holds several points) for the
differences to be paired, so this runs once all models of an evaluation are scored. Keys added to ``metrics[model]`` for each headline key ``m`` (e.g.
``FHR@20``):

* ``m_ci``: ``[lo, hi]``, the percentile CI of the model's mean;
* ``m_diff``, ``m_diff_ci``: mean(model) - mean(best baseline) and its paired CI;
* ``m_vs``: the name of that baseline (the baseline with the best point estimate of ``m``; the
  best baseline itself gets no difference; ``m_ref``: whether the row is that baseline);
* ``ci_level``: the intervals' level (``eval.bootstrap.level``), which every table labels them with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from conrec.eval.bootstrap import mean_ci, paired_diff_ci, resample
from conrec.eval.metrics import higher_is_better, nan_mean

HEADLINE_METRICS = ("FHR", "LUF", "LIF", "HR")
MIN_POINTS = 2  # fewer evaluation points (of a metric's population) get no intervals and no paired differences (the eval stage says so)
SMALL_N = 30
"""Fewer evaluation points still get intervals and paired differences, but no difference is marked significant
(the summary's ``*``), and the eval stage says why: on 2 or 3 points two rows are often constant over the points,
and every resample then gives the same difference, a zero-width interval that "excludes 0" (n = 2: popularity
hit both points, the LM neither, ``-1.000*``)."""


def best_baseline(values: dict[str, dict[str, np.ndarray]], baselines: Sequence[str], key: str) -> str | None:
    """The baseline with the best mean of ``key`` (first listed wins ties); None if none has it."""
    scored = [(nan_mean(values[b][key]), b) for b in baselines if b in values and key in values[b]]
    scored = [(v, b) for v, b in scored if not math.isnan(v)]
    if not scored:
        return None
    sign = 1.0 if higher_is_better(key) else -1.0
    best = max(sign * v for v, _ in scored)
    return next(b for v, b in scored if sign * v == best)


def add_intervals(
    metrics: dict[str, dict[str, object]],
    values: dict[str, dict[str, np.ndarray]],
    baselines: Sequence[str],
    keys: Sequence[str],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    users: Sequence[object] | None = None,
) -> None:
    """Add ``_ci`` / ``_diff`` / ``_diff_ci`` / ``_vs`` entries (see module doc) to ``metrics`` in place.

    ``values``: model -> key -> per-point array, all models over the same points in the same order.
    ``users``: each point's user, in that order: when one holds more than one point the users are resampled
    (:func:`conrec.eval.bootstrap.resample`); None resamples the points.
    """
    lengths = {len(v) for per_model in values.values() for v in per_model.values()}
    if not lengths:
        return
    if len(lengths) != 1:
        raise ValueError(f"per-point arrays differ in length across models/keys: {sorted(lengths)}")
    n = lengths.pop()
    if n < MIN_POINTS:  # every resample is the one point: a zero-width interval that "excludes 0"
        return
    idx = resample(n, users, resamples, seed)
    for key in keys:
        ref = best_baseline(values, baselines, key)
        for model, per_key in values.items():
            if key not in per_key or np.count_nonzero(~np.isnan(per_key[key])) < MIN_POINTS:
                continue  # LUF and LIF count only their own points: one gave a zero-width interval that "excludes 0"
            row = metrics.setdefault(model, {})
            row["ci_level"] = level
            row[f"{key}_ci"] = list(mean_ci(per_key[key], idx, level))
            row[f"{key}_ref"] = model == ref  # written either way: rows from before it existed are told apart by its absence
            if ref is None or model == ref:
                continue
            ref_values = values[ref][key]
            row[f"{key}_diff"] = nan_mean(per_key[key]) - nan_mean(ref_values)
            row[f"{key}_diff_ci"] = list(paired_diff_ci(per_key[key], ref_values, idx, level))
            row[f"{key}_vs"] = ref


def is_reference(row: Mapping[str, object], key: str) -> bool:
    """Whether ``row`` is the best baseline of ``key``: ``key_ref``, or for rows written before it existed, an
    interval with no difference, as those were read (which misread every LM row when no baseline was evaluated)."""
    if f"{key}_ref" in row:
        return bool(row[f"{key}_ref"])
    return f"{key}_ci" in row and f"{key}_diff" not in row


def ci_label(metrics: Mapping[str, Mapping[str, object]]) -> str:
    """``"95% CI"``: the level the rows' intervals were computed at (``ci_level``; 95% for rows written
    before it was recorded), so that a table never calls a 50% interval a 95% one."""
    level = next((r["ci_level"] for r in metrics.values() if isinstance(r.get("ci_level"), float)), 0.95)
    return f"{100 * float(level):g}% CI"  # type: ignore[arg-type]
