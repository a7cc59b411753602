"""The exposures table: every item shown to a user, with what the user did about it.

Why a table of its own: the events table keeps only explicit feedback (neutral exposures are
dropped everywhere), but the exposure-controlled evaluation (:mod:`conrec.eval.candidates`) asks
"among the items this user was *shown* that day, which one did they dislike?", so it needs the items
shown without any reaction as well. Written by the data stage as ``data/exposures.parquet``.

Schema: ``user_id`` (str), ``item_id`` (str), ``ts`` (int64 epoch seconds), ``outcome`` (int8:
-1 dislike, +1 positive, 0 shown without feedback).

Where it comes from, per source:

* ``simulator``: the simulator's own log of every shown item (true exposures, 0 = no feedback).
* ``movielens100k``: every rating, the lukewarm ones (between the two thresholds) as outcome 0:
  on MovieLens "exposed" means "rated", the closest observable notion of having been shown it.
* any other source: the feedback events themselves (no neutral exposures are observable), so
  candidate slates there contain only items the user reacted to.
"""

from __future__ import annotations

from typing import TypeVar

import polars as pl

from conrec.data.schema import DISLIKE, POSITIVE
from conrec.errors import DataValidationError, require_columns

EXPOSURE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "ts": pl.Int64(),
    "outcome": pl.Int8(),
}
NO_FEEDBACK = 0


def validate_exposures(exposures: pl.DataFrame, items: pl.DataFrame, source: str = "exposures") -> pl.DataFrame:
    """Cast to :data:`EXPOSURE_SCHEMA`, keep only catalogue items, sort by (user, ts).

    Raises :class:`DataValidationError` for missing columns, nulls or outcomes outside {-1, 0, +1}.
    """
    require_columns(exposures, EXPOSURE_SCHEMA, source)
    for col in EXPOSURE_SCHEMA:
        if exposures[col].null_count():
            raise DataValidationError(f"{source}: column {col!r} has {exposures[col].null_count()} null value(s)")
    bad = exposures.filter(~pl.col("outcome").is_in([DISLIKE, NO_FEEDBACK, POSITIVE]))
    if bad.height:
        raise DataValidationError(f"{source}: outcome must be -1, 0 or +1; found {bad['outcome'].unique().to_list()[:5]}")
    out = exposures.select(pl.col(c).cast(t) for c, t in EXPOSURE_SCHEMA.items())
    known = items.select(pl.col("item_id").cast(pl.String))
    return out.join(known, on="item_id", how="semi").sort(["user_id", "ts"], maintain_order=True)


_Frame = TypeVar("_Frame", pl.DataFrame, pl.LazyFrame)


def exposures_from_events(events: _Frame) -> _Frame:
    """Feedback events as exposures (for sources that log no neutral exposure); lazy in, lazy out,
    so the out-of-core data stage derives them from its events file without loading it."""
    return events.select("user_id", "item_id", "ts", pl.col("feedback").cast(pl.Int8).alias("outcome"))


def movielens100k_exposures(dislike_max_rating: float = 2.0, like_min_rating: float = 4.0) -> pl.DataFrame:
    """Every MovieLens-100K rating as an exposure: <= dislike_max -> -1, >= like_min -> +1, else 0."""
    from conrec.data.sources.common import parse_timestamps
    from conrec.data.sources.movielens100k import locate_ml100k, read_atomic

    d = locate_ml100k()
    inter = read_atomic(d / "ml-100k.inter", "MovieLens-100K interactions")
    rating = inter["rating"].cast(pl.Float64)
    outcome = (
        pl.when(pl.col("rating") <= dislike_max_rating)
        .then(pl.lit(DISLIKE, pl.Int8))
        .when(pl.col("rating") >= like_min_rating)
        .then(pl.lit(POSITIVE, pl.Int8))
        .otherwise(pl.lit(NO_FEEDBACK, pl.Int8))
    )
    ts = parse_timestamps(inter["timestamp"].cast(pl.Float64), "s", f"MovieLens-100K interactions {d}")
    return inter.select("user_id", "item_id").with_columns(rating=rating, ts=ts).select(
        "user_id", "item_id", "ts", outcome.alias("outcome")
    )
