"""Ranking metrics for negative recommendation: pure functions over item-id lists, and a registry.

Why FHR (future hit ratio) is the headline metric: the next disliked item mostly reflects the
platform's exposure order (once a user dislikes something, similar items stop being shown), so a
model is judged by whether its top-K hits the *set* of items the user dislikes over the next N days.
Definitions follow the CoNRec paper (see /work/shared/PAPER.md):

* **FHR@K** (future hit ratio): 1 if at least one top-K item is in the N-day future-negative set,
  else 0; averaged over evaluation points. (Before issue 11 this name meant the share of the K
  slots that hit; that quantity is now **FPrec@K**.)
* **FPrec@K**: share of the K slots holding a future negative (denominator K).
* **FRecall@K**: share of the future set found in the top K.
* **HR@K / NDCG@K**: against the single next negative (the conventional target).
* **LUF@K**: FHR@K over long-tail *users*: points whose user gave fewer than
  ``LONG_TAIL_USER_NEGATIVES`` (3) dislikes before t, all of them (the samples' ``hist_negatives``;
  ``hist_feedback`` stops at ``max_history`` events, so a user with many recent positives would
  look long-tail by it: samples written before that column existed are counted in it still).
* **LIF@K**: FHR@K where only future negatives on long-tail *items* count: items with fewer than
  ``LONG_TAIL_ITEM_DISLIKES`` (5) dislikes in the *training events* (the events the baselines are
  fitted on: before the evaluated split's cut-off, per user under the per-user protocol). Averaged
  over the points whose future set holds at least one long-tail item (the paper's LIF exceeds its
  FHR, so it cannot average over all points).

Per-point metrics live in :data:`POINT_METRICS` (name, direction, per-sample function); a
per-sample function returns one float per evaluation point and NaN where the point is outside the
metric's population (LUF, LIF), so the mean, the bootstrap and paired differences all work on
the same arrays (:mod:`conrec.eval.bootstrap`).

Conventions (all functions):

* ``ranked`` is a model's output, best first. Only the first ``k`` entries count; a list shorter
  than ``k`` leaves the missing slots empty, and they count as misses (denominators stay ``k``).
* A duplicated item earns credit once; its extra slots are misses (a model must not gain by
  repeating a lucky guess).
* ``k`` must be >= 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from conrec.data.windows import future_set
from conrec.errors import DataValidationError, require_columns

_HORIZON_KEY = re.compile(r"^(?P<metric>[A-Za-z]+)@(?P<k>\d+)\|N=(?P<h>[0-9.]+)d$")

LONG_TAIL_USER_NEGATIVES = 3  # LUF: a user with fewer dislikes before t is long-tail
LONG_TAIL_ITEM_DISLIKES = 5  # LIF: an item with fewer training dislikes is long-tail


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _hits(ranked: Sequence[str], future: Collection[str], k: int) -> int:
    _check_k(k)
    fut = future if isinstance(future, (set, frozenset)) else set(future)
    return len(set(ranked[:k]) & fut)


def fhr_at_k(ranked: Sequence[str], future: Collection[str], k: int) -> float:
    """1.0 if any of the top ``k`` is in the future-negative set, else 0.0 (the paper's hit ratio).

    An empty future set gives 0.0: nothing can be hit.
    """
    return 1.0 if _hits(ranked, future, k) else 0.0


def fprec_at_k(ranked: Sequence[str], future: Collection[str], k: int) -> float:
    """Share of the top-``k`` slots holding an item of the future-negative set (denominator ``k``)."""
    return _hits(ranked, future, k) / k


def future_recall_at_k(ranked: Sequence[str], future: Collection[str], k: int) -> float:
    """Share of the future-negative set found in the top ``k`` (hits / |future|); 0.0 if it is empty."""
    n = len(set(future))
    return _hits(ranked, future, k) / n if n else 0.0


def hr_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """1.0 if the single target (the next negative) is in the top ``k``, else 0.0."""
    _check_k(k)
    return 1.0 if target in ranked[:k] else 0.0


def ndcg_at_k(ranked: Sequence[str], target: str, k: int) -> float:
    """NDCG with one relevant item: ``1 / log2(rank + 2)`` at its first 0-based rank within ``k``."""
    _check_k(k)
    for rank, item in enumerate(ranked[:k]):
        if item == target:
            return 1.0 / math.log2(rank + 2)
    return 0.0


def catalog_coverage(rankings: Iterable[Sequence[str]], n_items: int, k: int) -> float:
    """Distinct items appearing in any top-``k`` list, as a share of the catalogue (``n_items``)."""
    _check_k(k)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    seen: set[str] = set()
    for ranked in rankings:
        seen.update(ranked[:k])
    return len(seen) / n_items


def invalid_rate(n_invalid: int, n_total: int) -> float:
    """Share of generated candidates that named no real item; 0.0 when nothing was generated."""
    if n_invalid < 0 or n_total < 0:
        raise ValueError(f"counts must be >= 0, got n_invalid={n_invalid}, n_total={n_total}")
    if n_invalid > n_total:
        raise ValueError(f"n_invalid ({n_invalid}) cannot exceed n_total ({n_total})")
    return n_invalid / n_total if n_total else 0.0


def long_tail_items(train_dislike_counts: Mapping[str, int], catalogue: Iterable[str], threshold: int = LONG_TAIL_ITEM_DISLIKES) -> frozenset[str]:
    """Catalogue items with fewer than ``threshold`` training dislikes (absent from the counts = 0)."""
    return frozenset(i for i in catalogue if train_dislike_counts.get(i, 0) < threshold)


@dataclass(frozen=True)
class PointInputs:
    """Everything a per-sample metric reads, aligned by evaluation point.

    ``hist_negatives`` is None when the samples carry neither ``hist_negatives`` nor ``hist_feedback`` (LUF is then skipped);
    ``long_tail`` is None when no training dislike counts were given (LIF is then skipped).
    """

    rankings: list[list[str]]
    futures: list[set[str]]
    targets: list[str]
    hist_negatives: np.ndarray | None
    long_tail: frozenset[str] | None


PerSample = Callable[[PointInputs, int], np.ndarray | None]


@dataclass(frozen=True)
class PointMetric:
    """A metric defined per evaluation point (mean over points, NaN = point outside the population)."""

    name: str
    higher_is_better: bool
    per_sample: PerSample
    description: str


def _fhr_values(x: PointInputs, k: int) -> np.ndarray:
    return np.array([fhr_at_k(r, f, k) for r, f in zip(x.rankings, x.futures)], dtype=np.float64)


def _luf_values(x: PointInputs, k: int) -> np.ndarray | None:
    if x.hist_negatives is None:
        return None
    v = _fhr_values(x, k)
    v[x.hist_negatives >= LONG_TAIL_USER_NEGATIVES] = np.nan
    return v


def _lif_values(x: PointInputs, k: int) -> np.ndarray | None:
    if x.long_tail is None:
        return None
    out = np.full(len(x.rankings), np.nan)
    for n, (r, f) in enumerate(zip(x.rankings, x.futures)):
        tail = f & x.long_tail
        if tail:
            out[n] = fhr_at_k(r, tail, k)
    return out


def _simple(fn: Callable[[Sequence[str], Any, int], float], target: str) -> PerSample:
    def values(x: PointInputs, k: int) -> np.ndarray:
        other = x.futures if target == "future" else x.targets
        return np.array([fn(r, o, k) for r, o in zip(x.rankings, other)], dtype=np.float64)

    return values


POINT_METRICS: dict[str, PointMetric] = {
    m.name: m
    for m in (
        PointMetric("FHR", True, _fhr_values, "share of points with >= 1 top-K item in the N-day future dislikes"),
        PointMetric("FPrec", True, _simple(fprec_at_k, "future"), "share of the K slots in the future dislikes"),
        PointMetric("FRecall", True, _simple(future_recall_at_k, "future"), "share of the future dislikes in the top K"),
        PointMetric("HR", True, _simple(hr_at_k, "target"), "next dislike in the top K"),
        PointMetric("NDCG", True, _simple(ndcg_at_k, "target"), "NDCG of the next dislike"),
        PointMetric("LUF", True, _luf_values, f"FHR over users with < {LONG_TAIL_USER_NEGATIVES} dislikes before t"),
        PointMetric("LIF", True, _lif_values, f"FHR on future items with < {LONG_TAIL_ITEM_DISLIKES} training dislikes"),
    )
}
HORIZON_METRICS = ("FHR", "FPrec", "FRecall")  # the ones that depend on the future window N
LOWER_IS_BETTER = frozenset({"invalid_rate"})


def higher_is_better(key: str) -> bool:
    """Direction of a metrics.json key (``FHR@20``, ``FHR@20|N=7d``, ``invalid_rate`` ...)."""
    base = key.split("@", 1)[0]
    if base in POINT_METRICS:
        return POINT_METRICS[base].higher_is_better
    return key not in LOWER_IS_BETTER


def horizon_key(metric: str, k: int, horizon_days: float) -> str:
    """Name of a metric computed at a non-default horizon, e.g. ``FHR@20|N=7d``.

    Why flat keys: ``metrics.json`` stays ``model -> metric -> value`` while holding the
    FHR-vs-horizon curve as well.
    """
    return f"{metric}@{k}|N={horizon_days:g}d"


def parse_horizon_key(key: str) -> tuple[str, int, float] | None:
    """Inverse of :func:`horizon_key`: ``(metric, k, horizon_days)``, or None for ordinary keys."""
    m = _HORIZON_KEY.match(key)
    if m is None:
        return None
    return m["metric"], int(m["k"]), float(m["h"])


def _check_inputs(predictions: pl.DataFrame, samples: pl.DataFrame, need: list[str]) -> None:
    require_columns(predictions, ("sample_id", "items"), "predictions")
    require_columns(samples, need, "samples")
    if samples.height == 0:
        raise DataValidationError("samples: nothing to evaluate (0 rows)")
    dup = predictions.filter(pl.col("sample_id").is_duplicated())["sample_id"].unique()
    if dup.len():
        raise DataValidationError(f"predictions: duplicate sample_id(s) {dup.head(5).to_list()}")
    unknown = predictions.join(samples.select("sample_id"), on="sample_id", how="anti")["sample_id"]
    if unknown.len():
        raise DataValidationError(
            f"predictions: {unknown.len()} sample_id(s) are not among the evaluated samples, e.g. {unknown.head(5).to_list()}"
        )


def point_inputs(
    predictions: pl.DataFrame,
    samples: pl.DataFrame,
    horizon_days: float | None = None,
    train_dislike_counts: Mapping[str, int] | None = None,
    catalogue: Iterable[str] | None = None,
) -> tuple[PointInputs, int]:
    """Align ``predictions`` with ``samples`` (in ``samples`` order): (inputs, total invalid).

    ``predictions``: ``sample_id``, ``items`` (List[String], best first), optional ``n_invalid``
    (Int64: generated candidates that named no real item). ``samples``: the samples contract of
    :mod:`conrec.data.samples`. A sample without a prediction counts as all misses: models cannot
    improve their score by skipping hard samples. Predictions for sample ids absent from
    ``samples`` are an error (they would mean the caller mixed up splits).

    ``horizon_days=None`` uses ``future_negs`` (the data stage's N); a number recomputes the future
    set from ``later_negs``/``later_neg_ts`` (valid up to the data stage's ``max_horizon_days``).
    ``train_dislike_counts`` (item -> dislikes in the training events) enables LIF; items of
    ``catalogue`` (default: the counted items plus every future item) absent from it count 0.
    """
    need = ["sample_id", "next_neg"] + (["future_negs"] if horizon_days is None else ["ts", "later_negs", "later_neg_ts"])
    _check_inputs(predictions, samples, need)
    extra = [str(c) for c in ("hist_negatives", "hist_feedback") if c in samples.columns][:1]
    pred_cols = ["sample_id", "items"] + (["n_invalid"] if "n_invalid" in predictions.columns else [])
    joined = samples.select(need + extra).join(predictions.select(pred_cols), on="sample_id", how="left", maintain_order="left")
    rankings: list[list[str]] = [list(x) if x is not None else [] for x in joined["items"].to_list()]
    targets: list[str] = joined["next_neg"].to_list()
    if horizon_days is None:
        futures = [set(f or ()) for f in joined["future_negs"].to_list()]
    else:
        if horizon_days <= 0:
            raise ValueError(f"horizon_days must be > 0, got {horizon_days}")
        futures = [
            future_set(items or (), ts or (), t, horizon_days)
            for items, ts, t in zip(joined["later_negs"].to_list(), joined["later_neg_ts"].to_list(), joined["ts"].to_list())
        ]
    hist_neg = None
    if extra == ["hist_negatives"]:
        hist_neg = joined["hist_negatives"].fill_null(0).to_numpy().astype(np.int64)
    elif extra:  # samples from before hist_negatives: the dislikes within the max_history window
        hist_neg = joined["hist_feedback"].list.eval(pl.element() < 0).list.sum().fill_null(0).to_numpy().astype(np.int64)
    tail = None
    if train_dislike_counts is not None:
        universe = set(catalogue) if catalogue is not None else set(train_dislike_counts).union(*futures)
        tail = long_tail_items(train_dislike_counts, universe)
    n_invalid = int(joined["n_invalid"].fill_null(0).sum()) if "n_invalid" in joined.columns else 0
    return PointInputs(rankings, futures, targets, hist_neg, tail), n_invalid


def point_values(inputs: PointInputs, ks: Sequence[int], metrics: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Per-point values of every registered metric (or those named) at every K: ``"FHR@20" -> array``.

    Metrics whose inputs are missing (LUF without histories, LIF without training counts) are left out.
    """
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    for k in ks:
        _check_k(k)
    chosen = [POINT_METRICS[m] for m in (metrics if metrics is not None else POINT_METRICS)]
    out: dict[str, np.ndarray] = {}
    for k in ks:
        for m in chosen:
            v = m.per_sample(inputs, k)
            if v is not None:
                out[f"{m.name}@{k}"] = v
    return out


def nan_mean(values: np.ndarray) -> float:
    """Mean over the points inside the metric's population; NaN when there are none."""
    mask = ~np.isnan(values)
    return float(values[mask].mean()) if mask.any() else float("nan")


def _check_lists_reach(predictions: pl.DataFrame, samples: pl.DataFrame, ks: Sequence[int], n_items: int) -> None:
    """Refuse a K that no prediction list reaches while the catalogue had room for more: its metrics would be
    those of the longest list's length, labelled @K. No list at all (nothing predicted) is all misses, as ever."""
    if "items" not in predictions.columns or predictions.height == 0:
        return  # the column is named by point_inputs' check; no prediction: every point is a miss
    longest = max(predictions["items"].list.len().fill_null(0).to_list(), default=0)
    if longest == 0:
        return
    room = n_items
    if "hist_items" in samples.columns and "sample_id" in predictions.columns:
        hist = predictions.select("sample_id").join(samples.select("sample_id", "hist_items"), on="sample_id", how="inner")
        if hist.height:
            room = n_items - min(hist["hist_items"].list.unique().list.len().fill_null(0).to_list(), default=0)
    for k in sorted(ks):
        if k > longest and room > longest:
            raise DataValidationError(
                f"ks: K={k} is longer than every prediction list (at most {longest} items) while the catalogue had room "
                f"for more, so its metrics would be those @{longest}; predict at least {k} items per point or drop K={k}"
            )


def evaluate(
    predictions: pl.DataFrame,
    samples: pl.DataFrame,
    ks: Sequence[int],
    n_items: int,
    horizon_days: float | None = None,
    train_dislike_counts: Mapping[str, int] | None = None,
    catalogue: Iterable[str] | None = None,
) -> dict[str, float]:
    """Every registered point metric at every K (mean over points), Coverage@K, invalid_rate, n_samples.

    Inputs as in :func:`point_inputs`. ``invalid_rate`` = total invalid / (total invalid + total
    returned items). LUF/LIF are left out when no point is in their population.

    A K longer than every prediction list is refused (``FHR@50`` of top-5 lists was FHR@5 under another
    name) unless the lists are short because the catalogue minus a point's history (``hist_items``,
    when the samples have it) has no more items.
    """
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    for k in ks:
        _check_k(k)
    _check_lists_reach(predictions, samples, ks, n_items)
    inputs, n_invalid = point_inputs(predictions, samples, horizon_days, train_dislike_counts, catalogue)
    out = {key: m for key, v in point_values(inputs, ks).items() if not math.isnan(m := nan_mean(v))}
    for k in ks:
        out[f"Coverage@{k}"] = catalog_coverage(inputs.rankings, n_items, k)
    n_returned = sum(len(r) for r in inputs.rankings)
    out["invalid_rate"] = invalid_rate(n_invalid, n_invalid + n_returned)
    out["n_samples"] = float(len(inputs.rankings))
    return out
