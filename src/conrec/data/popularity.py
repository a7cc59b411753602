"""Global dislike popularity: how often each item was disliked, and the catalogue in that order.

Why one module: the popularity baseline, the serving fallback (``serve.model: popular``), LIF's
long-tail items and every baseline's tie-break all rank by the same counts; computed in one place
they cannot disagree about what "disliked" means or how ties break (catalogue order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from conrec.data.schema import DISLIKE


def dislike_counts(events: pl.DataFrame) -> dict[str, int]:
    """Dislikes per item id in ``events`` (items never disliked are absent)."""
    agg = events.filter(pl.col("feedback") == DISLIKE).group_by("item_id").len()
    return dict(zip(agg["item_id"].cast(pl.String).to_list(), agg["len"].to_list()))


def catalogue_dislike_counts(events: pl.DataFrame | None, item_ids: Sequence[str]) -> np.ndarray:
    """Float64 dislike counts aligned with ``item_ids``; dislikes of items outside it are ignored."""
    counts = np.zeros(len(item_ids), dtype=np.float64)
    if events is None or events.height == 0:
        return counts
    index = {it: j for j, it in enumerate(item_ids)}
    for it, n in dislike_counts(events).items():
        j = index.get(it)
        if j is not None:
            counts[j] = n
    return counts


def popularity_order(counts: np.ndarray) -> np.ndarray:
    """Catalogue indices, most disliked first; ties keep catalogue order (a stable sort)."""
    return np.argsort(-counts, kind="stable")
