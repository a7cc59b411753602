"""Facet rule: which facet of each dislike caused it, times how often the user meets each facet.

Why: where a dislike is caused by one facet value of an item (a category, a tone, a setting) and
users do not like what they cannot stand, a disliked item's values are suspects and the user's
*likes* clear the innocent ones: a value the user has liked is unlikely to be a dislike facet. And
what a user will be shown next follows what they have been shown so far, so the user's own mix of
facet values is a personal exposure estimate, where taste x exposure uses global popularity only.
In the simulator (whose users never like an item on their dislike facets, and whose feed follows
each user's interests) this rule scores far above every other baseline; on MovieLens-100K it is
below popularity (docs/results.md). It is the reference for what a model that reads the whole
timeline, likes included, could gain in such worlds.

For a sample, with ``k_v`` and ``l_v`` the history's dislikes and positives that have facet ``v``:

* ``p(v) = k_v / (k_v + prior) * exp(-like_penalty * l_v)``: how likely ``v`` is a dislike facet;
* ``P(i) = 1 - prod over i's facets v of (1 - p(v))``: how likely item ``i`` lies on one;
* ``exposure(i) = log(1 + dislikes of i in the fit events) + sum over i's facets v of log share(v)``,
  ``share(v)``: the history's events with facet ``v`` among its events with any value of ``v``'s
  column (add-one smoothed);
* score ``log(P(i) + 1e-3) + exposure_weight * exposure(i)``, shifted per sample so that the lowest is 1.

Facet columns come from ``eval.category`` (one place to name item facets).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.eval.baselines.base import Catalog, histories
from conrec.eval.baselines.category import item_facets, no_facet_reason
from conrec.eval.baselines.scored import ScoredRecommender
from conrec.eval.config import CategoryConfig, FacetRuleConfig

_FLOOR = 1e-3  # keeps log P finite for items on no suspected facet (they still rank by exposure)


def facet_rule_scores(
    dislikes: np.ndarray, likes: np.ndarray, seen: np.ndarray, facet_column: np.ndarray, log_pop: np.ndarray,
    members: sp.csr_matrix | np.ndarray, cfg: FacetRuleConfig,
) -> np.ndarray:
    """One sample's item scores (pure). ``dislikes``, ``likes``, ``seen``: per-facet counts in the
    history (dislikes, positives, all events); ``facet_column``: each facet's column index;
    ``log_pop``: ``log(1 + dislikes)`` per item; ``members``: facets x items, 1 where the item has it."""
    p = dislikes / (dislikes + cfg.prior) * np.exp(-cfg.like_penalty * likes)
    log_miss = np.asarray(members.T @ np.log1p(-np.minimum(p, 1.0 - 1e-9))).ravel()
    on_facet = -np.expm1(log_miss)
    per_column = np.bincount(facet_column, weights=seen + 1.0)  # add-one over every value of the column
    log_share = np.log((seen + 1.0) / per_column[facet_column])
    exposure = log_pop + np.asarray(members.T @ log_share).ravel()
    return np.log(on_facet + _FLOOR) + cfg.exposure_weight * exposure


class FacetRuleRecommender(ScoredRecommender):
    name = "facet_rule"

    def __init__(self, cfg: FacetRuleConfig | None = None, facets: CategoryConfig | None = None) -> None:
        self.cfg = cfg or FacetRuleConfig()
        self.facets = facets or CategoryConfig()
        self._catalog: Catalog | None = None
        self._members: sp.csc_matrix | None = None  # facets x items (csc: a history's columns are sliced)
        self._facet_column: np.ndarray | None = None
        self.no_signal: str | None = None  # see conrec.eval.baselines.base.no_signal_reason

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        _, members, columns = item_facets(items, self.facets)
        self.no_signal = no_facet_reason(members, columns, self.facets)  # the scores are then log-popularity alone
        order = {c: j for j, c in enumerate(dict.fromkeys(columns))}
        self._members = members.tocsc()
        self._facet_column = np.array([order[c] for c in columns] or [0], dtype=np.int64)
        self._catalog = cat

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        cat = self.catalog()
        assert self._members is not None and self._facet_column is not None
        members, log_pop = self._members, np.log1p(cat.dislike_counts)
        hist = histories(samples)
        out = np.empty((len(hist), len(cat.item_ids)), dtype=np.float64)
        for r, (items, feedback) in enumerate(hist):
            idx = np.array(cat.encode(items), dtype=np.int64)
            fb = np.array([f for item, f in zip(items, feedback) if item in cat.index], dtype=np.int64)
            dis, pos, seen = (np.asarray(members[:, cols].sum(axis=1)).ravel() for cols in (idx[fb < 0], idx[fb > 0], idx))
            row = facet_rule_scores(dis, pos, seen, self._facet_column, log_pop, members, self.cfg)
            out[r] = row - row.min() + 1.0  # positive, as top_k reads scores; the order is the rule's
        return out
