"""Item-kNN on co-dislikes: recommend what other users disliked together with this user's dislikes.

Similarity is the cosine of binary dislike columns, ``|U_i & U_j| / sqrt(|U_i| |U_j|)`` (one sparse
product), pruned to each item's ``top_neighbours`` strongest neighbours. A sample's score for item
``c`` is ``sum_j decay**j * sim(d_j, c)`` over its dislikes ``d_0, d_1, ...`` (most recent first),
so fresh dislikes weigh more. Items with no co-dislike signal are filled by popularity.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.eval.baselines.base import Catalog, DescribedBaseline, NotFittedError, RowHook, histories, recent_dislikes, recommend_in_chunks
from conrec.eval.baselines.scored import NO_CO_DISLIKE_AT_POINT, dislike_matrix, no_co_dislike
from conrec.eval.config import ItemKnnConfig


class ItemKnnRecommender(DescribedBaseline):
    name = "itemknn"
    no_point_signal = NO_CO_DISLIKE_AT_POINT  # see conrec.eval.baselines.base.popularity_points

    def __init__(self, cfg: ItemKnnConfig | None = None) -> None:
        self.cfg = cfg or ItemKnnConfig()
        self._catalog: Catalog | None = None
        self._sim: sp.csr_matrix | None = None
        self.no_signal: str | None = None

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        x = dislike_matrix(events, cat)
        co = (x.T @ x).tocsr()
        norms = np.sqrt(np.asarray(co.diagonal()))
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        sim = sp.diags(inv) @ co @ sp.diags(inv)
        sim = sp.csr_matrix(sim)
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self._sim = _prune_rows(sim, self.cfg.top_neighbours)
        self._catalog = cat
        self.no_signal = no_co_dislike(x)  # a reason, or None (conrec.eval.baselines.base.no_signal_reason)

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Decayed co-dislike similarity to the sample's dislikes (0 without any co-dislike signal)."""
        if self._catalog is None or self._sim is None:
            raise NotFittedError("itemknn: call fit() before item_scores()")
        cat, sim, decay = self._catalog, self._sim, self.cfg.recency_decay
        hist = histories(samples)
        out = np.zeros((len(hist), sim.shape[0]), dtype=np.float64)
        for r, (items, feedback) in enumerate(hist):
            disliked = cat.encode(recent_dislikes(items, feedback))
            if disliked:
                w = decay ** np.arange(len(disliked), dtype=np.float64)
                h = sp.csr_matrix((w, (np.zeros(len(disliked), dtype=np.int64), disliked)), shape=(1, sim.shape[0]))
                out[r] = np.asarray((h @ sim).todense()).ravel()
        return out

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        if self._catalog is None or self._sim is None:
            raise NotFittedError("itemknn: call fit() before recommend()")
        return recommend_in_chunks(self.item_scores, samples, self._catalog, k, on_row)


def _prune_rows(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the ``n`` largest entries of each row (a neighbour list per item)."""
    m = m.tocsr()
    rows, cols, vals = [], [], []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        if hi == lo:
            continue
        v, c = m.data[lo:hi], m.indices[lo:hi]
        if hi - lo > n:
            keep = np.argpartition(-v, n - 1)[:n]
            v, c = v[keep], c[keep]
        rows.append(np.full(len(c), i))
        cols.append(c)
        vals.append(v)
    if not rows:
        return sp.csr_matrix(m.shape)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=m.shape)
