"""A scored slate's ranks and keep/filter decisions: one rule for the API, the CLI and the docs.

Scores are dislike scores (higher = more likely disliked). The LM's is :data:`LM_SCORE`: a log-probability
(<= 0) only while ``decode.popularity_prior`` = w is 0; the demo and full presets set w = 1, and then a score
sits ``w * log prior(item)`` (several nats, item by item) below the model's log-probability, so every place that shows
one names it by :func:`lm_score_column` / :func:`lm_score_note` rather than calling it a log-probability.
Rank 1 = most likely disliked; equal scores keep the slate's order. With a ``threshold`` an item
is filtered when its score is at or above it (``score >= threshold``), kept otherwise; a
non-finite score (a -inf log-probability: the model rules the item out) is always kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Decision = Literal["keep", "filter"]

LM_SCORE = "log p(SID | prompt) + w * log prior(item), w = decode.popularity_prior (a log-probability only when w = 0)"
"""What an LM's dislike score is: the help texts, docstrings and API schemas say this, not "log-probability"."""


def lm_score_column(popularity_prior: float) -> str:
    """The CLI column header of an LM's scores: ``log-prob`` only when that is what they are (w = 0)."""
    return "log-prob" if popularity_prior == 0 else "score"


def lm_score_note(popularity_prior: float) -> str | None:
    """One line to print under a table of LM scores when they are not log-probabilities (w > 0), else None.

    Why: a user reading the column as the model's probability, or picking a ``--threshold`` on a log-probability
    scale, is off by each item's log prior, which differs from item to item."""
    if popularity_prior == 0:
        return None
    return f"score: log p(SID | prompt) + w * log prior(item), w = decode.popularity_prior = {popularity_prior:g} (a log-probability only when w = 0)"


def rank_scores(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, highest first; ties in slate order; NaN/-inf last."""
    key = [s if math.isfinite(s) or s == math.inf else -math.inf for s in scores]
    order = sorted(range(len(key)), key=lambda j: (-key[j], j))
    ranks = [0] * len(key)
    for r, j in enumerate(order, start=1):
        ranks[j] = r
    return ranks


def decide(scores: Sequence[float], threshold: float | None) -> list[Decision | None]:
    """``filter`` where ``score >= threshold``, else ``keep``; all None without a threshold."""
    if threshold is None:
        return [None] * len(scores)
    return ["filter" if math.isfinite(s) and s >= threshold else "keep" for s in scores]


def check_slates(candidates: Sequence[Sequence[str]], n_rows: int, per: str = "history", per_plural: str = "history(ies)") -> None:
    """One non-empty slate of distinct item ids per row (``per``: a history, a sample), or a one-line
    :class:`conrec.errors.DataValidationError` naming the slate: the Predictor's check and the baselines'
    (:func:`conrec.eval.baselines.base.candidate_scores`) alike.

    Why a string is refused: ``str`` is a ``Sequence[str]``, so ``["181", "258"]`` given for ``[["181"], ["258"]]``
    was read character by character (items "1", "8", "1") and scored without a word; type checkers cannot catch it."""
    from conrec.errors import DataValidationError
    from conrec.history import repeated_ids

    if isinstance(candidates, (str, bytes)):
        raise DataValidationError(f"the candidates are a string; give a list of item ids per {per} ([[...], ...])")
    if len(candidates) != n_rows:
        raise DataValidationError(f"{len(candidates)} candidate slate(s) for {n_rows} {per_plural}; give one per {per}")
    for n, slate in enumerate(candidates):
        if isinstance(slate, (str, bytes)):  # its characters were read as item ids ("repeats item id(s) ['0']")
            raise DataValidationError(f"candidate slate #{n} is a string; give a list of item ids per {per} ([[...], ...])")
        if len(slate) == 0:
            raise DataValidationError(f"candidate slate #{n} is empty: give at least one item id to score")
        dup = repeated_ids(map(str, slate))
        if dup:
            raise DataValidationError(f"candidate slate #{n} repeats item id(s) {dup[:10]}")
