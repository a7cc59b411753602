""""Dislike the same category again": the simplest taste-aware rule.

A user who disliked two horror films is likely to dislike the next horror film shown. Categories
are scored by the user's dislikes with recency decay (``decay**j`` for the j-th most recent
dislike, so both frequency and recency count); each item scores the sum of its categories' scores,
items of equal score are ranked by global dislike popularity, and popularity fills the rest.
Multi-valued categories (``"Action|Comedy"``) are split on ``separator``; empty categories carry
no signal. ``columns`` may name further item attributes used the same way (each ``(column, value)``
is a facet), e.g. tone and setting on simulated data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.data.categories import split_labels
from conrec.errors import require_columns
from conrec.eval.baselines.base import (
    Catalog,
    DescribedBaseline,
    NotFittedError,
    RowHook,
    histories,
    recent_dislikes,
    recommend_in_chunks,
)
from conrec.eval.config import CategoryConfig


def item_facets(items: pl.DataFrame, cfg: CategoryConfig) -> tuple[list[list[int]], sp.csr_matrix, list[str]]:
    """Each item row's facet indices, the facets x items membership matrix (1 where the item has the
    facet) and each facet's column (pure). A facet is one ``(column, value)`` of ``cfg.columns``;
    multi-valued cells are split on ``cfg.separator``; empty cells carry none (:func:`conrec.data.categories.split_labels`)."""
    require_columns(items, ("item_id", *cfg.columns), "items")
    index: dict[tuple[str, str], int] = {}
    item_cats: list[list[int]] = [[] for _ in range(items.height)]
    for col in cfg.columns:
        for j, labels in enumerate(split_labels(items[col].cast(pl.String).to_list(), cfg.separator)):
            for name in labels:
                item_cats[j].append(index.setdefault((col, name), len(index)))
    rows = [c for cs in item_cats for c in cs]
    cols = [j for j, cs in enumerate(item_cats) for _ in cs]
    members = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(max(len(index), 1), len(item_cats)))
    return item_cats, members, [col for col, _ in index]


def facet_pairs(items: pl.DataFrame, cfg: CategoryConfig) -> float:
    """Item pairs sharing a facet value, once per value they share: the sum of the values' squared item counts
    (n_items^2 / n_values for values of one size), the nonzeros of taste x exposure's item x item matrix with
    repeats (pure). Its cost grows with this (:func:`conrec.eval.cost.taste_exposure_cost`)."""
    _, members, _ = item_facets(items, cfg)
    counts = np.asarray(members.sum(axis=1)).ravel()
    return float((counts**2).sum())


# A column where at least this share of the items with a value share none of their values with another item
# (a title, an id) names almost no facet two items have in common: see :func:`unique_column_notes`.
NEAR_UNIQUE_SHARE = 0.9


def no_facet_reason(members: sp.csr_matrix, columns: list[str], cfg: CategoryConfig) -> str | None:
    """The ``no_signal`` reason of a facet baseline whose items have no facet value, or whose every facet value is
    held by one item only (``members`` and ``columns`` as :func:`item_facets` returns them), else None. Why the
    second: a value on one item carries a dislike of it to no other item (and history items are never
    recommended), so the scores are popularity's, silently: the report says so. Found by probing: the item id
    given as the category column gave three rows that equal popularity's with no word."""
    if not columns:
        return f"no item has a value in eval.category.columns {cfg.columns}: no facet to score"
    if members.nnz and np.asarray(members.sum(axis=1)).max() <= 1:
        return (f"no value of eval.category.columns {cfg.columns} is shared by two items (each item its own facet, "
                "like a title or an id): no dislike carries to another item")
    return None


def unique_column_notes(items: pl.DataFrame, cfg: CategoryConfig, *, readers: Sequence[str]) -> list[str]:
    """One report note per column of ``cfg.columns`` whose values almost never repeat (at least
    :data:`NEAR_UNIQUE_SHARE` of the items with a value share none of their values with another item), naming
    its distinct-value share (distinct values / items with a value) and the baselines ``readers`` it feeds, in their
    order (those that read the columns: :func:`conrec.eval.baselines.facet_readers`, in ``eval.baselines`` order as
    the preflight names them; none, no note) (pure). Why a note and not a refusal: such a column adds (almost) nothing
    to those rules, but the other columns may still carry them (where no value at all is shared,
    :func:`no_facet_reason` adds that the rows are popularity's).

    ``readers`` is keyword-only: this parameter was once every listed baseline (``eval.baselines``), filtered here;
    passed so positionally now, popularity and itemknn would be named as facet readers without an error."""
    names = list(readers)
    if not names or not all(c in items.columns for c in cfg.columns):
        return []
    notes = []
    for col in cfg.columns:
        labels = [ls for ls in split_labels(items[col].cast(pl.String).to_list(), cfg.separator) if ls]
        if not labels:
            continue
        counts: dict[str, int] = defaultdict(int)
        for ls in labels:
            for name in ls:
                counts[name] += 1
        alone = sum(all(counts[name] == 1 for name in ls) for ls in labels) / len(labels)
        if alone >= NEAR_UNIQUE_SHARE:
            notes.append(
                f"eval.category.columns: `{col}` has {len(counts):,} distinct values over the {len(labels):,} items with "
                f"a value (a distinct-value share of {len(counts) / len(labels):.2f}; {alone:.0%} of those items share "
                f"no value of it with another item), so as a facet it carries a dislike to almost no other item and "
                f"adds next to nothing to {', '.join(names)}: name a column whose values repeat (a genre, a category)."
            )
    return notes


class CategoryRecommender(DescribedBaseline):
    name = "category"

    def __init__(self, cfg: CategoryConfig | None = None) -> None:
        self.cfg = cfg or CategoryConfig()
        self._catalog: Catalog | None = None
        self._item_cats: list[list[int]] = []
        self._members: sp.csr_matrix | None = None  # categories x items, 1 where the item is in the category
        self.no_signal: str | None = None  # see conrec.eval.baselines.base.no_signal_reason

    def fit(self, events: pl.DataFrame, items: pl.DataFrame) -> None:
        cat = Catalog.build(events, items)
        self._item_cats, self._members, columns = item_facets(items, self.cfg)
        self.no_signal = no_facet_reason(self._members, columns, self.cfg)
        self._catalog = cat

    def item_scores(self, samples: pl.DataFrame) -> np.ndarray:
        """Sum of the item's categories' decayed dislike weights in the sample's history (0 = none)."""
        if self._catalog is None or self._members is None:
            raise NotFittedError("category: call fit() before item_scores()")
        cat, members, decay = self._catalog, self._members, self.cfg.recency_decay
        hist = histories(samples)
        out = np.zeros((len(hist), len(cat.item_ids)), dtype=np.float64)
        for r, (items, feedback) in enumerate(hist):
            weights: dict[int, float] = defaultdict(float)
            for j, item in enumerate(cat.encode(recent_dislikes(items, feedback))):
                for c in self._item_cats[item]:
                    weights[c] += decay**j
            if weights:
                cats = np.fromiter(weights.keys(), dtype=np.int64)
                w = np.fromiter(weights.values(), dtype=np.float64)
                out[r] = np.asarray(members[cats].T @ w).ravel()
        return out

    def recommend(self, samples: pl.DataFrame, k: int, on_row: RowHook | None = None) -> list[list[str]]:
        if self._catalog is None or self._members is None:
            raise NotFittedError("category: call fit() before recommend()")
        return recommend_in_chunks(self.item_scores, samples, self._catalog, k, on_row)
