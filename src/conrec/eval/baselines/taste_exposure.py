"""Taste x exposure: what the user tends to dislike, weighted by what the platform tends to show.

Why: on exposure-biased logs a future dislike needs both a matching taste *and* an exposure, and
global dislike popularity is the best available proxy for exposure. Each sample's score is
``(1 - w) * personal + w * pop``: ``personal`` is the user's recency-weighted category affinity
(facets from ``eval.category``) or co-dislike item-kNN score, divided by its maximum over the
catalogue for that sample; ``pop`` is ``log(1 + dislikes)`` of each item over the fit events,
divided by its maximum. ``w`` (``pop_weight``) is chosen on the valid split. A user with no
dislikes in the history gets popularity alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from conrec.eval.baselines.base import Catalog, fitted_catalog
from conrec.eval.baselines.category import CategoryRecommender
from conrec.eval.baselines.itemknn import ItemKnnRecommender
from conrec.eval.baselines.scored import ScoredRecommender, dislike_history_matrix, scale_rows, scaled_log_popularity
from conrec.eval.config import CategoryConfig, ItemKnnConfig, TasteExposureConfig
from conrec.eval.cost import ITEM_ITEM_MAX_ITEMS  # the item x item path's limit (its cost reads it too)


class TasteExposureRecommender(ScoredRecommender):
    name = "taste_exposure"

    def __init__(self, cfg: TasteExposureConfig | None = None, facets: CategoryConfig | None = None) -> None:
        self.cfg = cfg or TasteExposureConfig()
        self.facets = facets or CategoryConfig()
        self._catalog: Catalog | None = None
        self._item_item = None  # (n_items, n_items) sparse: personal score = history @ this
        self._members: Any = None  # (facet values, n_items) sparse, instead of item_item on a large catalogue
        self._pop: np.ndarray | None = None
        self.no_signal: str | None = None  # see conrec.eval.baselines.base.no_signal_reason

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        # The personal signals reuse the fitted internals of the category / itemknn baselines (one
        # definition of facets and of co-dislike similarity).
        if self.cfg.personal == "category":
            rec = CategoryRecommender(self.facets.model_copy(update={"recency_decay": self.cfg.recency_decay}))
            rec.fit(events, items)
            self.no_signal = rec.no_signal  # no facet: a personal score of 0, popularity alone
            members = rec._members  # categories x items
            assert members is not None
            if members.shape[1] <= ITEM_ITEM_MAX_ITEMS:
                self._item_item = (members.T @ members).tocsr()  # item -> items sharing a facet (weighted by shared count)
            else:  # n_items^2 / n_categories nonzeros (5 GB at 10^5 items): the same product through the facets
                self._members = members.tocsr()
            cat = fitted_catalog(rec)
        else:
            knn = ItemKnnRecommender(ItemKnnConfig(recency_decay=self.cfg.recency_decay, top_neighbours=self.cfg.top_neighbours))
            knn.fit(events, items)
            self.no_signal = knn.no_signal  # no co-dislike: a zero similarity, popularity alone (as itemknn's row)
            self._item_item = knn._sim
            cat = fitted_catalog(knn)
        assert cat is not None
        self._pop = scaled_log_popularity(cat.dislike_counts)
        self._catalog = cat

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        cat = self.catalog()
        assert (self._item_item is not None or self._members is not None) and self._pop is not None
        hist = dislike_history_matrix(samples, cat, decay=self.cfg.recency_decay)
        if self._item_item is None:  # history @ (members.T @ members), associated the cheap way
            personal = scale_rows(np.asarray(((hist @ self._members.T) @ self._members).todense()))
        else:
            personal = scale_rows(np.asarray((hist @ self._item_item).todense()))
        w = self.cfg.pop_weight
        return (1.0 - w) * personal + w * self._pop[None, :]
