"""Ranking metrics for negative recommendation: pure functions over item-id lists.

Why FHR (future hit ratio) is the headline metric: the next disliked item mostly reflects the
platform's exposure order (once a user dislikes something, similar items stop being shown), so a
model is judged by how many of its top-K items fall in the *set* of items the user dislikes over
the next N days (CoNRec). HR/NDCG against the single next negative are kept as the conventional
view.

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
from typing import Collection, Iterable, Sequence

import polars as pl

from conrec.data.samples import future_set
from conrec.errors import DataValidationError

_HORIZON_KEY = re.compile(r"^(?P<metric>[A-Za-z]+)@(?P<k>\d+)\|N=(?P<h>[0-9.]+)d$")


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _hits(ranked: Sequence[str], future: Collection[str], k: int) -> int:
    _check_k(k)
    fut = future if isinstance(future, (set, frozenset)) else set(future)
    return len(set(ranked[:k]) & fut)


def fhr_at_k(ranked: Sequence[str], future: Collection[str], k: int) -> float:
    """Share of the top-``k`` slots holding an item of the future-negative set (denominator ``k``).

    An empty future set gives 0.0: nothing can be hit.
    """
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


def evaluate(
    predictions: pl.DataFrame,
    samples: pl.DataFrame,
    ks: Sequence[int],
    n_items: int,
    horizon_days: float | None = None,
) -> dict[str, float]:
    """Average FHR@K, FRecall@K, HR@K, NDCG@K and Coverage@K over every sample, plus invalid_rate.

    ``predictions``: ``sample_id``, ``items`` (List[String], best first), optional ``n_invalid``
    (Int64: generated candidates that named no real item). ``samples``: the samples contract of
    :mod:`conrec.data.samples`. A sample without a prediction counts as all misses: models cannot
    improve their score by skipping hard samples. Predictions for sample ids absent from
    ``samples`` are an error (they would mean the caller mixed up splits).

    ``horizon_days=None`` uses ``future_negs`` (the data stage's N); a number recomputes the future
    set from ``later_negs``/``later_neg_ts`` (valid up to the data stage's ``max_horizon_days``).
    ``invalid_rate`` = total invalid / (total invalid + total returned items).
    """
    if not ks:
        raise ValueError("ks must name at least one cut-off")
    for k in ks:
        _check_k(k)
    for col in ("sample_id", "items"):
        if col not in predictions.columns:
            raise DataValidationError(f"predictions: missing column {col!r}; have {predictions.columns}")
    need = ["sample_id", "next_neg"] + (["future_negs"] if horizon_days is None else ["ts", "later_negs", "later_neg_ts"])
    missing = [c for c in need if c not in samples.columns]
    if missing:
        raise DataValidationError(f"samples: missing column(s) {missing}; have {samples.columns}")
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

    pred_cols = ["sample_id", "items"] + (["n_invalid"] if "n_invalid" in predictions.columns else [])
    joined = samples.select(need).join(predictions.select(pred_cols), on="sample_id", how="left", maintain_order="left")
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

    n = len(rankings)
    out: dict[str, float] = {}
    for k in ks:
        out[f"FHR@{k}"] = sum(fhr_at_k(r, f, k) for r, f in zip(rankings, futures)) / n
        out[f"FRecall@{k}"] = sum(future_recall_at_k(r, f, k) for r, f in zip(rankings, futures)) / n
        out[f"HR@{k}"] = sum(hr_at_k(r, t, k) for r, t in zip(rankings, targets)) / n
        out[f"NDCG@{k}"] = sum(ndcg_at_k(r, t, k) for r, t in zip(rankings, targets)) / n
        out[f"Coverage@{k}"] = catalog_coverage(rankings, n_items, k)
    n_invalid = int(joined["n_invalid"].fill_null(0).sum()) if "n_invalid" in joined.columns else 0
    n_returned = sum(len(r) for r in rankings)
    out["invalid_rate"] = invalid_rate(n_invalid, n_invalid + n_returned)
    out["n_samples"] = float(n)
    return out
