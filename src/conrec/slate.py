"""A scored slate's ranks and keep/filter decisions: one rule for the API, the CLI and the docs.

Scores are dislike scores (higher = more likely disliked; the LM's are log-probabilities, <= 0).
Rank 1 = most likely disliked; equal scores keep the slate's order. With a ``threshold`` an item
is filtered when its score is at or above it (``score >= threshold``), kept otherwise; a
non-finite score (a -inf log-probability: the model rules the item out) is always kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Decision = Literal["keep", "filter"]


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
