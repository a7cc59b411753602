"""Swing co-negatives as a baseline: what pairs of otherwise-dissimilar users disliked together.

The same similarity (:mod:`conrec.swing`) extends the future-negative set in the similarity
reward, so this row says how much that collaborative signal is worth on its own.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.eval.baselines.base import Catalog, DescribedBaseline, NotFittedError, RowHook, recommend_in_chunks
from conrec.eval.baselines.scored import NO_CO_DISLIKE_AT_POINT, NO_SWING_PAIR, dislike_history_matrix, dislike_matrix
from conrec.eval.config import SwingBaselineConfig
from conrec.swing import SwingConfig, swing_matrix


class SwingRecommender(DescribedBaseline):
    name = "swing"
    no_point_signal = NO_CO_DISLIKE_AT_POINT  # see conrec.eval.baselines.base.popularity_points

    def __init__(self, cfg: SwingBaselineConfig | None = None) -> None:
        self.cfg = cfg or SwingBaselineConfig()
        self._catalog: Catalog | None = None
        self._sim = None
        self.no_signal: str | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        params = SwingConfig(**{k: getattr(self.cfg, k) for k in SwingConfig.model_fields})
        self._sim = sim = swing_matrix(dislike_matrix(events, cat), params)
        self._catalog = cat
        self.no_signal = None if sim.nnz else NO_SWING_PAIR  # a reason, or None (base.no_signal_reason)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Decayed Swing similarity to the sample's dislikes (0 without any Swing signal)."""
        if self._catalog is None or self._sim is None:
            raise NotFittedError("swing: call fit() before item_scores()")
        h = dislike_history_matrix(samples, self._catalog, decay=self.cfg.recency_decay)
        return np.asarray((h @ self._sim).todense(), dtype=np.float64).reshape(samples.height, -1)

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        if self._catalog is None:
            raise NotFittedError("swing: call fit() before recommend()")
        return recommend_in_chunks(self.item_scores, samples, self._catalog, k, on_row)
