"""EASE on the dislike matrix: closed-form item-item regression (Steck, WWW 2019).

Why: the strongest simple collaborative baseline in many comparisons, with one parameter. It solves
``min_B ||X - X B||^2 + lambda ||B||^2`` with ``diag(B) = 0`` on the binary user x item dislike
matrix ``X`` of the fit events: ``P = (X'X + lambda I)^-1``, ``B_ij = -P_ij / P_jj``. A sample's
scores are ``h B`` for its binary history-dislike vector ``h``. Dense ``n_items^2``: meant for
catalogues up to a few ten thousand items.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.eval.baselines.base import Catalog
from conrec.eval.baselines.scored import ScoredRecommender, dislike_history_matrix, dislike_matrix, no_co_dislike
from conrec.eval.config import EaseConfig


def ease_weights(x: sp.spmatrix, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` (zero diagonal) for a users x items matrix ``x``."""
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    g = np.asarray((x.T @ x).todense(), dtype=np.float64)
    g[np.diag_indices_from(g)] += l2
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b


class EaseRecommender(ScoredRecommender):
    name = "ease"

    def __init__(self, cfg: EaseConfig | None = None) -> None:
        self.cfg = cfg or EaseConfig()
        self._catalog: Catalog | None = None
        self._b: np.ndarray | None = None
        self.no_signal: str | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        x = dislike_matrix(events, cat)
        self._b = ease_weights(x, self.cfg.l2)
        self._catalog = cat
        self.no_signal = no_co_dislike(x)  # a reason, or None (conrec.eval.baselines.base.no_signal_reason)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        cat = self.catalog()
        assert self._b is not None
        return np.asarray(dislike_history_matrix(samples, cat, binary=True) @ self._b)
