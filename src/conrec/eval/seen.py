"""Every item a user interacted with before an evaluation point: what no model may recommend there.

Why: a point's ``hist_items`` holds only its newest ``data.split.max_history`` events (what the models read), and
excluding only those left every item rated earlier eligible. On MovieLens-100K no user rates an item twice, so each
such item in a top-K was a certain miss, and the misses fell unevenly across models: on the per-user protocol's
3,501 test points popularity put one in the top-20 of 23% of the points (4,664 slots), itemknn of 7% (852), and
popularity's FHR@20 rose from 0.159 to 0.180 with them excluded (session 41's audit). "History items are excluded
from every model's top-K" now means the whole history before t.

The seen set is computed at evaluation time from the events before each point's ``ts`` (a pure function of the
data stage's tables: the data stage's outputs, and so every fingerprint built on them, stay as they were). It is a
column of the samples frame the eval stage hands to every model (:data:`SEEN_COLUMN`), read by
:func:`exclusion_sets`; a samples frame without it (``conrec predict``, serving, training-time checks) excludes its
``hist_items``, the history it is given, as before.
"""

from __future__ import annotations

import polars as pl

from conrec.errors import require_columns

SEEN_COLUMN = "seen_items"
"""List[String]: the distinct items of the user's events before the point (its ``hist_items`` included), sorted."""


def with_seen_items(samples: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """``samples`` with :data:`SEEN_COLUMN`: each point's ``hist_items`` plus every item of its user's events with
    ``ts`` before the point's. (An event at the point's own second that comes before it in the input order is in
    ``hist_items`` already, the newest events of the history; one after it is a label, not history.)"""
    require_columns(samples, ("sample_id", "user_id", "ts", "hist_items"), "samples")
    require_columns(events, ("user_id", "item_id", "ts"), "events")
    earlier = (
        samples.lazy()
        .select("sample_id", pl.col("user_id").cast(pl.String), "ts")
        .join(
            events.lazy().select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), pl.col("ts").alias("event_ts")),
            on="user_id",
            how="inner",
        )
        .filter(pl.col("event_ts") < pl.col("ts"))
        .group_by("sample_id")
        .agg(pl.col("item_id").unique().alias("_earlier"))
        .collect()
    )
    joined = samples.join(earlier, on="sample_id", how="left", maintain_order="left")
    seen = pl.concat_list(
        pl.col("hist_items").cast(pl.List(pl.String)).fill_null([]), pl.col("_earlier").fill_null([])
    ).list.unique().list.sort()
    return joined.with_columns(seen.alias(SEEN_COLUMN)).drop("_earlier")


def exclusion_sets(samples: pl.DataFrame) -> list[set[str]]:
    """Each point's items never to recommend: its ``hist_items``, plus :data:`SEEN_COLUMN` where the eval stage
    attached it (the whole history before the point)."""
    require_columns(samples, ("hist_items",), "samples")
    hist = samples["hist_items"].to_list()
    if SEEN_COLUMN not in samples.columns:
        return [{str(i) for i in h or ()} for h in hist]
    return [{str(i) for i in h or ()} | {str(i) for i in s or ()} for h, s in zip(hist, samples[SEEN_COLUMN].to_list())]
