"""Taste check against the simulator's ground truth: how much of each model's top-K lies on the
user's true dislike facets.

Why: FHR@K says whether a ranking hit, not why. In a simulated world every user has a few latent
dislike facets (a category, a tone or a setting; :mod:`conrec.data.simulator`), and almost every
dislike is on one of them, so the share of a top-K that is on the user's facets measures the
personalisation a model learned, apart from exposure and popularity. It is what showed that the LM
ranks what each user is shown rather than what each user rejects (docs/results.md). Real data has
no such ground truth, so the check exists only where the data stage wrote ``user_facets.parquet``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from conrec.data.simulator import on_facet_pairs
from conrec.errors import require_columns


def facet_items(user_facets: pl.DataFrame, items: pl.DataFrame) -> dict[str, set[str]]:
    """Each user's on-facet item ids (pure), by the simulator's own rule
    (:func:`conrec.data.simulator.on_facet_pairs`). An axis that is not a column of ``items`` matches nothing."""
    require_columns(user_facets, ("user_id", "axis", "value"), "user facets")
    require_columns(items, ("item_id",), "items")
    out: dict[str, set[str]] = {}
    for user, item in on_facet_pairs(user_facets, items).iter_rows():
        out.setdefault(user, set()).add(item)
    return out


def on_facet_share(rankings: Sequence[Sequence[str]], users: Sequence[str], on_facet: Mapping[str, set[str]], k: int) -> float:
    """Mean over points of the share of the top-``k`` items on the point's user's facets (pure).

    A point with an empty ranking counts 0 (nothing of its taste was found); NaN without points.
    """
    if len(rankings) != len(users):
        raise ValueError(f"{len(rankings)} rankings but {len(users)} users")
    if not rankings:
        return float("nan")
    shares = []
    for ranked, user in zip(rankings, users):
        top, facets = list(ranked)[:k], on_facet.get(str(user), set())
        shares.append(sum(i in facets for i in top) / len(top) if top else 0.0)
    return float(np.mean(shares))


def future_on_facet_share(samples: pl.DataFrame, on_facet: Mapping[str, set[str]]) -> float:
    """Share of the evaluated points' future dislikes that are on their user's facets: the reference
    a perfectly personalised ranking approaches."""
    require_columns(samples, ("user_id", "future_negs"), "samples")
    flags = [
        i in on_facet.get(str(u), set()) for u, fut in zip(samples["user_id"].to_list(), samples["future_negs"].to_list()) for i in fut or ()
    ]
    return float(np.mean(flags)) if flags else float("nan")


def taste_section(shares: Mapping[str, float], k: int, reference: float) -> str:
    """Markdown: each model's on-facet share of its top-``k``, with the future dislikes' share."""
    lines = [
        "## Taste check (simulator ground truth)",
        "",
        f"Share of each model's top-{k} on the user's true dislike facets; of the evaluated points' future "
        f"dislikes, {reference:.3f} are on them. Higher means the ranking follows what this user rejects, "
        "not only what is shown to everyone.",
        "",
        f"| model | on-facet share of top-{k} |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in shares.items()]
    return "\n".join(lines)
