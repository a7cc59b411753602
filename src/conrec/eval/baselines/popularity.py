"""Global dislike popularity: the items most often disliked before the cut-off, minus the history.

Why: the floor every personalised model must clear; on exposure-biased logs it is surprisingly
strong, because the same few controversial items reach (and annoy) many users.
"""

from __future__ import annotations

import polars as pl

from conrec.eval.baselines.base import Catalog, NotFittedError, histories, top_k


class PopularityRecommender:
    name = "popularity"

    def __init__(self) -> None:
        self._catalog: Catalog | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        self._catalog = Catalog.build(events, items)

    def recommend(self, samples: pl.DataFrame, k: int) -> list[list[str]]:
        if self._catalog is None:
            raise NotFittedError("popularity: call fit() before recommend()")
        cat = self._catalog
        return [top_k(None, set(cat.encode(items)), cat, k) for items, _ in histories(samples)]
