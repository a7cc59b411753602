"""Content match: items whose text is closest to what the user disliked, weighted by exposure.

Why: where a dislike is caused by what an item *is* (its genre, tone, setting: all in its text),
the nearest texts to a user's past dislikes are the likeliest next ones, even for items nobody has
disliked yet. The co-dislike baselines cannot see that; the facet baselines see it only through
the columns ``eval.category`` names. This one reads the same item-text vectors the SIDs are built
from (``sid/text_vectors.npy``), so it is the content baseline the LM's SIDs must beat.

Each sample's personal score of an item is the mean of its ``top_m`` highest cosines to the
sample's ``max_dislikes`` most recent dislikes (the mean of a few, not the maximum, so one odd
dislike does not dominate), min-max scaled to [0, 1] per sample. The score is
``(1 - w) * personal + w * pop`` with ``pop`` the scaled ``log(1 + dislikes)`` of each item over the
fit events, as in taste x exposure. A user with no dislikes in the history gets popularity alone.

The vectors travel in the items table, column :data:`TEXT_VECTOR` (one list of floats per item):
the eval stage adds it (:func:`with_text_vectors`), so the :class:`Recommender` contract
``fit(events, items)`` is unchanged.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.errors import DataValidationError
from conrec.eval.baselines.base import Catalog, histories, recent_dislikes
from conrec.eval.baselines.scored import ScoredRecommender, scaled_log_popularity
from conrec.eval.config import ContentConfig
from conrec.llm.training.item_vectors import normalise

_GRAM_MAX_ITEMS = 8192  # up to here the item x item cosines are precomputed once (256 MB at float32)

TEXT_VECTOR = "text_vector"
"""Column of the items table holding each item's text vector (for the content baseline only)."""


def with_text_vectors(items: pl.DataFrame, vectors: np.ndarray) -> pl.DataFrame:
    """``items`` with :data:`TEXT_VECTOR` set from ``vectors`` (rows in ``items`` order; pure)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != items.height:
        raise DataValidationError(f"text vectors have shape {vectors.shape} for {items.height} items; rerun `conrec sid`")
    return items.with_columns(pl.Series(TEXT_VECTOR, vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])))


def top_m_mean(similarity: np.ndarray, m: int) -> np.ndarray:
    """Per row of ``similarity`` (items x dislikes), the mean of its ``m`` largest values (pure)."""
    m = min(m, similarity.shape[1])
    if m == similarity.shape[1]:
        return similarity.mean(axis=1)
    return np.partition(similarity, -m, axis=1)[:, -m:].mean(axis=1)


def min_max_rows(scores: np.ndarray) -> np.ndarray:
    """Each row scaled to [0, 1] (constant rows become 0; pure)."""
    low = scores.min(axis=1, keepdims=True)
    span = scores.max(axis=1, keepdims=True) - low
    return np.divide(scores - low, span, out=np.zeros_like(scores), where=span > 0)


class ContentRecommender(ScoredRecommender):
    name = "content"

    def __init__(self, cfg: ContentConfig | None = None) -> None:
        self.cfg = cfg or ContentConfig()
        self._catalog: Catalog | None = None
        self._vectors: np.ndarray | None = None
        self._gram: np.ndarray | None = None  # item x item cosines, small catalogues only
        self._pop: np.ndarray | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        catalog = Catalog.build(events, items)  # first: it refuses a table that is not a polars DataFrame
        if TEXT_VECTOR not in items.columns:
            raise DataValidationError(
                f"content baseline: the items table has no {TEXT_VECTOR!r} column (the eval stage adds it from the "
                "run's sid/text_vectors.npy; in Python: items = with_text_vectors(items, np.load(<run_dir>/sid/text_vectors.npy)) "
                "from conrec.eval.baselines.content; rerun `conrec sid` if that file is missing)"
            )
        vectors = np.asarray(items[TEXT_VECTOR].to_numpy(), dtype=np.float32)
        if vectors.ndim != 2 or not np.isfinite(vectors).all():
            raise DataValidationError(f"content baseline: {TEXT_VECTOR!r} must hold one finite vector per item")
        self._catalog = catalog
        self._vectors = normalise(vectors)  # unit rows: dot products are cosines
        self._gram = self._vectors @ self._vectors.T if len(vectors) <= _GRAM_MAX_ITEMS else None
        self._pop = scaled_log_popularity(self._catalog.dislike_counts)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        cat = self.catalog()
        assert self._vectors is not None and self._pop is not None
        hist = histories(samples)
        personal = np.zeros((len(hist), len(cat.item_ids)), dtype=np.float64)
        for r, (items, feedback) in enumerate(hist):
            disliked = cat.encode(recent_dislikes(items, feedback))[: self.cfg.max_dislikes]
            if disliked:
                cols = sorted(set(disliked))
                sim = self._gram[:, cols] if self._gram is not None else self._vectors @ self._vectors[cols].T
                personal[r] = top_m_mean(sim, self.cfg.top_m)
        w = self.cfg.pop_weight
        return (1.0 - w) * min_max_rows(personal) + w * self._pop[None, :]
