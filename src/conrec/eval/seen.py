"""Every item a user interacted with before an evaluation point: what no model may recommend there.

Why: a point's ``hist_items`` holds only its newest ``data.split.max_history`` events (what the models read), and
excluding only those left every item rated earlier eligible. On MovieLens-100K no user rates an item twice, so each
such item in a top-K was a certain miss, and the misses fell unevenly across models: on the per-user protocol's
3,501 test points popularity put one in the top-20 of 23% of the points (4,664 slots), itemknn of 7% (852), and
popularity's FHR@20 rose from 0.159 to 0.180 with them excluded (the metrics audit of 7 December 2026). "History items are excluded
from every model's top-K" now means the whole history before t.

The seen set is computed at evaluation time from the events before each point's ``ts`` (a pure function of the
data stage's tables: the data stage's outputs, and so every fingerprint built on them, stay as they were). It is a
column of the samples frame the eval stage hands to every model (:data:`SEEN_COLUMN`), read by
:func:`exclusion_indices` (catalogue indices, what the baselines' top-K reads) and :func:`exclusion_sets` (the LM's
decoder, built per decoding batch); a samples frame without it (``conrec predict``, serving, training-time checks) excludes its
``hist_items``, the history it is given, as before.

Cost: each point's earlier items are a prefix of its user's items ordered by first rating (a binary search per
point), not a join of every point with all of its user's events (that join held 5.6 GB and took 17 s on a
2M-event log with 100k points; a review's measure, 7 December 2026). The exclusions are read as catalogue
indices by a vectorised lookup, not as one Python string set per point per ``recommend`` call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import numpy as np
import polars as pl
import pyarrow as pa

from conrec.errors import require_columns

SEEN_COLUMN = "seen_items"
"""List[Enum]: the distinct items of the user's events before the point (its ``hist_items`` included), sorted.

An Enum over the item ids of the events and histories (sorted, so the lists sort as strings do): 4 bytes per item
instead of a string, and :func:`exclusion_indices` maps it to catalogue indices through the category list alone.
A caller may also attach it as List[String] (tests, hand-made frames): it is then read as strings, with the
``hist_items`` added."""


def _listed(codes: np.ndarray, offsets: np.ndarray, vocab: pl.Series) -> pl.Series:
    """A List[Enum(vocab)] series from flat ``vocab`` positions and their per-row offsets (no string per element)."""
    values = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.uint32)), vocab.to_arrow().cast(pa.large_string()))
    lists = pl.Series("_earlier", pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values))
    return lists.cast(pl.List(pl.Enum(vocab)))


def _earlier_items(samples: pl.DataFrame, events: pl.DataFrame, vocab: pl.Series) -> pl.Series:
    """Per point, the distinct items of its user's events with ``ts`` before the point's, in first-rating order.

    An item was rated before t exactly when its user's first rating of it was, so the answer is the prefix of the
    user's (item, first ts) rows sorted by first ts that lies before t: one ``searchsorted`` per point."""
    first = (
        events.lazy()
        .select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String).cast(pl.Enum(vocab)).to_physical(),
                pl.col("ts").to_physical())
        .drop_nulls()
        .group_by("user_id", "item_id")
        .agg(pl.col("ts").min())
        .sort("user_id", "ts", "item_id")
        .collect()
    )
    first_ts = first["ts"].to_numpy()
    spans = first.with_row_index("_r").group_by("user_id").agg(pl.col("_r").min().alias("_start"), pl.len().alias("_n"))
    points = (
        samples.select(pl.col("user_id").cast(pl.String), pl.col("ts").to_physical().alias("_t"))
        .with_row_index("_p")
        .join(spans, on="user_id", how="left", maintain_order="left")
        .sort("_p")
    )
    start = points["_start"].fill_null(0).cast(pl.Int64).to_numpy()
    n = points["_n"].fill_null(0).cast(pl.Int64).to_numpy()
    t = points["_t"]
    known = t.is_not_null().to_numpy() & (n > 0)
    tv = t.fill_null(0).to_numpy()
    count = np.zeros(len(start), dtype=np.int64)
    for p in np.flatnonzero(known):  # one binary search in the user's own first-rating times
        s = start[p]
        count[p] = np.searchsorted(first_ts[s : s + n[p]], tv[p], side="left")
    offsets = np.zeros(len(count) + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    flat = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - start, count)
    return _listed(first["item_id"].to_numpy()[flat], offsets, vocab)


def with_seen_items(samples: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """``samples`` with :data:`SEEN_COLUMN`: each point's ``hist_items`` plus every item of its user's events with
    ``ts`` before the point's. (An event at the point's own second that comes before it in the input order is in
    ``hist_items`` already, the newest events of the history; one after it is a label, not history.)"""
    require_columns(samples, ("sample_id", "user_id", "ts", "hist_items"), "samples")
    require_columns(events, ("user_id", "item_id", "ts"), "events")
    hist = pl.col("hist_items").cast(pl.List(pl.String)).fill_null([])
    vocab = (
        pl.concat([events["item_id"].cast(pl.String), samples.select(hist.explode())["hist_items"]])
        .drop_nulls().unique().sort()
    )
    seen = pl.concat_list(hist.cast(pl.List(pl.Enum(vocab))), pl.col("_earlier")).list.unique().list.sort()
    return samples.with_columns(_earlier_items(samples, events, vocab)).with_columns(seen.alias(SEEN_COLUMN)).drop("_earlier")


def with_seen_items_each(frames: Sequence[pl.DataFrame], events: pl.DataFrame) -> list[pl.DataFrame]:
    """:func:`with_seen_items` of each of ``frames`` (samples frames of the same columns, read against the same
    ``events``), computed once for all of them; a frame given twice (the same object) is computed once.

    Why: the eval stage with ``eval.tune`` attached the seen set to its test points and to its valid points apart, each
    time grouping and sorting the whole events table again (twice the cost of this module's heaviest step). Each point's
    list depends only on its own user, ``ts`` and history, so the lists are those of the separate calls; only the Enum's
    categories are the union of the frames' items, and every reader maps them by name (:func:`exclusion_indices`) or
    reads strings."""
    distinct = list({id(f): f for f in frames}.values())
    if not distinct:
        return []
    joined = with_seen_items(pl.concat(distinct, how="vertical") if len(distinct) > 1 else distinct[0], events)
    parts: dict[int, pl.DataFrame] = {}
    start = 0
    for f in distinct:
        parts[id(f)] = joined.slice(start, f.height)
        start += f.height
    return [parts[id(f)] for f in frames]


def _seen_is_enum(samples: pl.DataFrame) -> bool:
    dtype = samples.schema.get(SEEN_COLUMN)
    return isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Enum)


def excluded_items(samples: pl.DataFrame) -> pl.Expr:
    """The expression of each point's excluded items as one List[String] over ``samples``: ``hist_items``, plus
    :data:`SEEN_COLUMN` where attached. The one rule of what a point's top-K and its slate leave out
    (:func:`exclusion_indices`, :func:`exclusion_sets`, :func:`conrec.eval.candidates.build_slates`)."""
    require_columns(samples, ("hist_items",), "samples")
    cols = [pl.col("hist_items").cast(pl.List(pl.String)).fill_null([])]
    if SEEN_COLUMN in samples.columns:
        cols.append(pl.col(SEEN_COLUMN).cast(pl.List(pl.String)).fill_null([]))
    return pl.concat_list(cols)


def _excluded_lists(samples: pl.DataFrame) -> pl.Series:
    """Each point's excluded items as one List[String] (:func:`excluded_items`)."""
    return samples.select(excluded_items(samples).alias("_ex"))["_ex"]


def _flat(lists: pl.Series) -> pl.Series:
    """The elements of every list in row order, ``list.len()`` of them per row (empty and null lists add none)."""
    return lists.explode(empty_as_null=False, keep_nulls=False)


def exclusion_indices(samples: pl.DataFrame, index: Mapping[str, int]) -> list[np.ndarray]:
    """Each point's items never to recommend (as :func:`exclusion_sets`) as an int64 array of their ``index``
    positions (catalogue indices; ids outside ``index`` are dropped, as ``Catalog.encode`` drops them).

    Why not string sets: this runs in every ``recommend`` (about 60 in an eval with tuning) on every point's whole
    history. The Enum seen column is mapped through its category list (one dict lookup per distinct item, then a
    numpy gather); it holds the ``hist_items`` already. Other frames take one vectorised lookup of their strings."""
    require_columns(samples, ("hist_items",), "samples")
    if _seen_is_enum(samples):
        lists = samples[SEEN_COLUMN]
        categories = cast(pl.Enum, cast(pl.List, lists.dtype).inner).categories
        lut = np.array([index.get(c, -1) for c in categories.to_list()] + [-1], dtype=np.int64)
        codes = lut[_flat(lists).to_physical().fill_null(len(categories)).to_numpy()]
    else:
        lists = _excluded_lists(samples)
        codes = _flat(lists).replace_strict(list(index), list(index.values()), default=-1, return_dtype=pl.Int64).to_numpy()
    lengths = lists.list.len().fill_null(0).to_numpy()
    rows = np.repeat(np.arange(len(lengths)), lengths)
    valid = codes >= 0
    counts = np.bincount(rows[valid], minlength=len(lengths))
    return np.split(codes[valid], np.cumsum(counts)[:-1]) if len(lengths) else []


def exclusion_sets(samples: pl.DataFrame) -> list[set[str]]:
    """Each point's items never to recommend: its ``hist_items``, plus :data:`SEEN_COLUMN` where the eval stage
    attached it (the whole history before the point). Python sets: build them per batch on large frames."""
    return [set(x) for x in _excluded_lists(samples).to_list()]
