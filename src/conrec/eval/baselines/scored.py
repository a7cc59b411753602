"""Baselines that score the whole catalogue per sample, and the helpers they share.

A :class:`ScoredRecommender` implements ``item_scores(samples) -> (n_samples, n_items)`` (higher =
more likely disliked; columns in catalogue order) and gets ``recommend`` from it through
:func:`conrec.eval.baselines.base.top_k`, so history exclusion, distinctness and the popularity
tie-break are the same as for every other baseline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.data.schema import DISLIKE
from conrec.eval.baselines.base import (
    Catalog,
    DescribedBaseline,
    NotFittedError,
    RowHook,
    histories,
    recent_dislikes,
    score_chunks,
    top_k,
)
from conrec.eval.seen import exclusion_indices


class ScoredRecommender(DescribedBaseline, ABC):
    """Base of catalogue-scoring baselines: subclasses set ``_catalog`` in ``fit`` and define ``item_scores``."""

    name: str = "scored"
    _catalog: Catalog | None = None

    @abstractmethod
    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None: ...

    @abstractmethod
    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """(n_samples, n_catalogue_items) float scores, higher = more likely disliked."""

    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise NotFittedError(f"{self.name}: call fit() before scoring")
        return self._catalog

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        """Top ``k`` by score (every item ranked: scores are shifted positive for ``top_k``), history excluded; ``on_row``
        sees each row unshifted (a shift can round distinct scores into one)."""
        cat = self.catalog()
        out: list[list[str]] = []
        for part in score_chunks(samples, len(cat.item_ids)):  # bounded memory on large catalogues
            for row, seen in zip(self.item_scores(part), exclusion_indices(part, cat.index)):  # whole history if attached
                if on_row is not None:
                    on_row(row, seen)
                out.append(top_k(row - row.min() + 1.0, seen, cat, k))
        return out


def dislike_history_matrix(samples: pl.DataFrame, cat: Catalog, decay: float = 1.0, binary: bool = False) -> sp.csr_matrix:
    """(n_samples, n_items) weights of each sample's history dislikes: ``decay**j`` for the j-th most
    recent (repeats add up), or 1 per disliked item when ``binary``."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, (items, feedback) in enumerate(histories(samples)):
        for j, c in enumerate(cat.encode(recent_dislikes(items, feedback))):
            rows.append(r)
            cols.append(c)
            vals.append(decay**j)
    m = sp.csr_matrix((vals, (rows, cols)), shape=(samples.height, len(cat.item_ids)), dtype=np.float64)
    if binary:
        m.data[:] = 1.0
    return m


def scale_rows(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its maximum (rows whose maximum is <= 0 become 0): scores in [0, 1] per sample."""
    top = scores.max(axis=1, keepdims=True) if scores.size else np.zeros((scores.shape[0], 1))
    return np.divide(scores, top, out=np.zeros_like(scores, dtype=np.float64), where=top > 0)


def scaled_log_popularity(dislike_counts: np.ndarray) -> np.ndarray:
    """``log(1 + dislikes)`` of each item divided by its maximum: an exposure proxy in [0, 1] (pure)."""
    logpop = np.log1p(dislike_counts)
    return logpop / logpop.max() if logpop.max() > 0 else logpop


NO_CO_DISLIKE = "no user disliked two catalogue items in the fit events (no co-dislike to learn from)"
NO_SWING_PAIR = "no two users disliked the same two items in the fit events (no Swing pair to learn from)"
NO_CO_DISLIKE_AT_POINT = "no co-dislike signal (no disliked item of the history has a neighbour)"
"""The item-item baselines' ``no_point_signal`` (:func:`conrec.eval.baselines.base.popularity_points`): at such a point
every item they may recommend scores the same."""


def no_co_dislike(x: sp.csr_matrix) -> str | None:
    """:data:`NO_CO_DISLIKE` when no row of the users x items dislike matrix ``x`` holds two items, else None: the
    item-item baselines (itemknn, EASE) then learn a zero similarity, and their rows are popularity's."""
    return NO_CO_DISLIKE if not x.shape[0] or int(np.diff(x.indptr).max()) < 2 else None


def dislike_matrix(events: pl.DataFrame, cat: Catalog) -> sp.csr_matrix:
    """Binary users x items matrix of the dislikes in ``events`` (items outside the catalogue dropped)."""
    pairs = (
        events.filter(pl.col("feedback") == DISLIKE)
        .select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .unique()
        .with_columns(pl.col("item_id").replace_strict(cat.index, default=-1, return_dtype=pl.Int64).alias("j"))
        .filter(pl.col("j") >= 0)
    )
    users = (pairs["user_id"].rank("dense") - 1).cast(pl.Int64).to_numpy()
    n_users = int(users.max()) + 1 if users.size else 0
    return sp.csr_matrix((np.ones(len(users)), (users, pairs["j"].to_numpy())), shape=(n_users, len(cat.item_ids)))
