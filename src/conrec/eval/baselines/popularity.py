"""Global dislike popularity: the items most often disliked before the cut-off, minus the history.

Why: the floor every personalised model must clear; on exposure-biased logs it is surprisingly
strong, because the same few controversial items reach (and annoy) many users.

``half_life_days`` (tunable) weights each dislike by ``0.5 ** (age / half_life)``, its age taken
from the newest fit event: what is exposed (and disliked) *now* predicts the next days better than
all-time counts when the catalogue's exposure drifts. None keeps plain counts.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.data.samples import DAY
from conrec.data.schema import DISLIKE
from conrec.eval.baselines.base import Catalog, DescribedBaseline, NotFittedError, RowHook, histories, recommend_in_chunks
from conrec.eval.config import PopularityConfig


def decayed_dislike_counts(events: pl.DataFrame, cat: Catalog, half_life_days: float) -> np.ndarray:
    """Per catalogue item, the sum over its dislikes of ``0.5 ** ((t_max - ts) / half_life)``."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
    out = np.zeros(len(cat.item_ids), dtype=np.float64)
    if events.height == 0:
        return out
    t_max = int(events["ts"].max())  # type: ignore[arg-type]
    neg = events.filter(pl.col("feedback") == DISLIKE)
    age_days = (t_max - neg["ts"].to_numpy()) / DAY
    idx = np.array([cat.index.get(i, -1) for i in neg["item_id"].cast(pl.String).to_list()], dtype=np.int64)
    keep = idx >= 0
    np.add.at(out, idx[keep], 0.5 ** (age_days[keep] / half_life_days))
    return out


class PopularityRecommender(DescribedBaseline):
    name = "popularity"

    def __init__(self, cfg: PopularityConfig | None = None) -> None:
        self.cfg = cfg or PopularityConfig()
        self._catalog: Catalog | None = None
        self._scores: np.ndarray | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        self._catalog = Catalog.build(events, items)
        hl = self.cfg.half_life_days
        self._scores = None if hl is None else decayed_dislike_counts(events, self._catalog, hl)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Every sample gets the items' (time-decayed, if ``half_life_days``) dislike counts before the
        cut-off: not personalised."""
        if self._catalog is None:
            raise NotFittedError("popularity: call fit() before item_scores()")
        n = len(histories(samples))
        counts = self._catalog.dislike_counts if self._scores is None else self._scores
        return np.broadcast_to(counts, (n, len(self._catalog.item_ids))).copy()

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        if self._catalog is None:
            raise NotFittedError("popularity: call fit() before recommend()")
        return recommend_in_chunks(self.item_scores, samples, self._catalog, k, on_row)
