"""Global dislike-popularity predictor for serving: the items most often disliked overall, minus the history.

Why it is here: it serves without any trained LM (``serve.model: popular``), which makes the whole
HTTP path testable and benchmarkable in isolation, and gives a sane fallback service. It follows
the same contract as ``conrec.llm.inference.predict.Predictor.recommend``. The counts and their order are
:mod:`conrec.data.popularity`'s, shared with the evaluation's popularity baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice

import polars as pl

from conrec.data.popularity import catalogue_dislike_counts, popularity_order
from conrec.errors import DataValidationError
from conrec.history import exclusion_lists


class PopularDislikePredictor:
    """Ranks every catalogue item by its share of all dislikes in ``events`` (ties: catalogue order)."""

    def __init__(self, events: pl.DataFrame | None, item_ids: Sequence[str]) -> None:
        counts = catalogue_dislike_counts(events, item_ids)
        total = max(float(counts.sum()), 1.0)
        self._ranked: list[tuple[str, float]] = [(item_ids[i], float(counts[i]) / total) for i in popularity_order(counts)]
        self._share = dict(self._ranked)
        self._known = set(item_ids)

    def score(self, histories: list[tuple[list[str], list[int]]], candidates: list[list[str]]) -> list[list[float]]:
        """Each candidate's share of all dislikes (the same number ``recommend`` ranks by)."""
        if len(histories) != len(candidates):
            raise DataValidationError(f"{len(candidates)} candidate slate(s) for {len(histories)} history(ies)")
        out = []
        for n, slate in enumerate(candidates):
            unknown = list(dict.fromkeys(i for i in slate if i not in self._known))
            if unknown:
                raise DataValidationError(f"slate {n}: unknown item id(s) {unknown[:10]}")
            out.append([self._share[i] for i in slate])
        return out

    def recommend(
        self, histories: list[tuple[list[str], list[int]]], k: int, exclude: Sequence[Iterable[str]] | None = None
    ) -> list[list[tuple[str, float]]]:
        """The ``k`` most disliked items outside each history and its ``exclude`` list (as the LM's ``recommend``)."""
        for n, (items, _feedback) in enumerate(histories):
            if not items:
                raise DataValidationError(f"history {n} is empty: give at least one item")
            unknown = list(dict.fromkeys(i for i in items if i not in self._known))
            if unknown:
                raise DataValidationError(f"history {n}: unknown item id(s) {unknown[:10]}")
        return [list(islice(((i, s) for i, s in self._ranked if i not in seen), k)) for seen in exclusion_lists(histories, exclude, self._known)]
