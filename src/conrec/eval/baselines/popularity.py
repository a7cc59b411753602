"""Global dislike popularity: the items most often disliked before the cut-off, minus the history.

Why: the floor every personalised model must clear; on exposure-biased logs it is surprisingly
strong, because the same few controversial items reach (and annoy) many users.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.eval.baselines.base import Catalog, NotFittedError, histories, recommend_from_scores


class PopularityRecommender:
    name = "popularity"

    def __init__(self) -> None:
        self._catalog: Catalog | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        self._catalog = Catalog.build(events, items)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Every sample gets the items' dislike counts before the cut-off (not personalised)."""
        if self._catalog is None:
            raise NotFittedError("popularity: call fit() before item_scores()")
        n = len(histories(samples))
        return np.broadcast_to(self._catalog.dislike_counts, (n, len(self._catalog.item_ids))).copy()

    def recommend(self, samples: pl.DataFrame, k: int) -> list[list[str]]:
        if self._catalog is None:
            raise NotFittedError("popularity: call fit() before recommend()")
        return recommend_from_scores(self.item_scores(samples), samples, self._catalog, k)
