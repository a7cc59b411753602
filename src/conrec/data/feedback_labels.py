"""Feedback given as words ("not_interested", "hide", "like") instead of -1/0/+1, as platform logs write it.

Why: the explicit negative feedback conrec learns from is usually logged as an action name, not a
number. ``data.feedback_labels`` maps each text value of the feedback column to -1 (dislike), +1
(positive) or 0 (neutral: dropped, as a 0 is). Values are compared after :func:`normalise`, so
``Not Interested``, ``not-interested`` and ``not_interested`` are one label. A value the mapping does
not name is an invalid row (dropped and counted as ``bad_feedback``, or an error under
``data.on_invalid: error``): a new action in the log is never silently taken for a dislike or a like.

``conrec init`` proposes the mapping from the words below (:func:`propose`) and marks every value
it does not know as neutral, in the file, for the user to check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import polars as pl

from conrec.data.schema import INTEGRAL_FLOAT_TEXT  # a flag written as a float (1.0, a pandas 0/1 column with a gap): read as 1

NEGATIVE_WORDS = frozenset({
    "dislike", "disliked", "not_interested", "notinterested", "uninterested", "hide", "hidden", "hid", "thumbs_down",
    "thumbsdown", "thumb_down", "downvote", "downvoted", "down", "negative", "neg", "block", "blocked", "report",
    "reported", "unlike", "hate", "dismiss", "dismissed", "see_less", "show_less", "less_like_this", "never_show",
})
POSITIVE_WORDS = frozenset({
    "like", "liked", "thumbs_up", "thumbsup", "thumb_up", "upvote", "upvoted", "up", "positive", "pos", "love", "loved",
    "favorite", "favourite", "fav", "save", "saved", "share", "shared", "purchase", "purchased", "buy", "bought",
    "click", "clicked", "play", "played", "watch", "watched", "view", "viewed", "complete", "completed", "finish",
    "finished", "follow", "followed", "subscribe", "subscribed", "add_to_cart", "cart", "rate", "rated",
})
"""Engagement counts as a positive: it shows what the user is shown and accepts, which the LM learns from
its positives (the same reason lukewarm ratings count as positives)."""
NEUTRAL_WORDS = frozenset({
    "neutral", "none", "no_feedback", "impression", "impressions", "exposure", "exposed", "shown", "show", "seen",
    "display", "displayed", "served",
})
"""Shown without a reaction: neutral (dropped), as a 0 is; an impression log would otherwise swamp the positives."""


SEPARATORS = r"[\s\-]+"
"""Inner spaces and hyphens, written as one underscore (the same rule in Python, polars and Spark)."""


def normalise(value: str) -> str:
    """Lower case, outer spaces dropped, inner spaces and hyphens as one underscore, ``1.0`` as ``1``."""
    return re.sub(INTEGRAL_FLOAT_TEXT, r"\1", re.sub(SEPARATORS, "_", value.strip().lower()))


def propose(values: Iterable[str]) -> tuple[dict[str, int], list[str]]:
    """(label -> -1/0/+1 for every distinct normalised value, the values it did not recognise: 0)."""
    mapping: dict[str, int] = {}
    unknown: list[str] = []
    for value in sorted({normalise(v) for v in values}):
        if value in NEGATIVE_WORDS:
            mapping[value] = -1
        elif value in POSITIVE_WORDS:
            mapping[value] = 1
        elif value in NEUTRAL_WORDS:
            mapping[value] = 0
        else:
            mapping[value] = 0
            unknown.append(value)
    return mapping, unknown


def normalised(column: pl.Expr) -> pl.Expr:
    """:func:`normalise` as a polars expression."""
    return column.cast(pl.String).str.strip_chars().str.to_lowercase().str.replace_all(SEPARATORS, "_").str.replace(INTEGRAL_FLOAT_TEXT, "${1}")


def map_labels(column: pl.Expr, labels: Mapping[str, int]) -> pl.Expr:
    """``column``'s text values as -1/0/+1 floats through ``labels`` (normalised keys); null where unnamed."""
    return normalised(column).replace_strict(
        {k: float(v) for k, v in labels.items()}, default=None, return_dtype=pl.Float64
    )
