"""The canonical tables every loader produces and every later stage consumes.

events: ``user_id`` (str), ``item_id`` (str), ``ts`` (int64, seconds since the Unix epoch, UTC),
        ``feedback`` (int8: -1 explicit dislike, +1 positive). Neutral feedback is dropped by the
        loaders: absence of a positive is neutrality, not dislike.
items:  ``item_id`` (str, unique), ``title`` (str), ``text`` (str), ``category`` (str), and any
        extra columns (kept as they are, except lists: :func:`flatten_list_columns`).

Ids are strings so that any source's ids (ints, ASINs, hashes) fit without remapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from conrec.errors import DataValidationError, require_columns

EVENT_COLUMNS: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "ts": pl.Int64(),
    "feedback": pl.Int8(),
}
ITEM_COLUMNS: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "title": pl.String(),
    "text": pl.String(),
    "category": pl.String(),
}
DISLIKE = -1
POSITIVE = 1
# Explicit dislikes are 5% to 25% of every log measured here: above this share of events, the feedback
# mapping is most likely off (`conrec init` and the data stage warn)
MOSTLY_DISLIKES = 0.5
# 9999-12-31T23:59:59Z: beyond it a timestamp cannot be epoch seconds (milliseconds, most likely),
# and Python's datetime cannot even print it.
MAX_TS = 253_402_300_799


_UNIT_SCALE = {"s": 1, "ms": 1_000, "us": 1_000_000}

EPOCH_UNITS: tuple[tuple[str, str, int, int], ...] = (
    ("s", "seconds", 10**8, 10**11),
    ("ms", "milliseconds", 10**11, 10**14),
    ("us", "microseconds", 10**14, 10**17),
    ("ns", "nanoseconds", 10**17, 2**63 - 1),
)
"""(unit, name, low, high): the epoch numbers that are a date after 1973-03 and before the year 5138 in that unit and
in no other. Below 1e8 (a clock that starts at 0, a placeholder) a number says nothing about its unit."""


def epoch_unit_facts(ts: pl.Expr, shown: pl.Expr | None = None) -> list[pl.Expr]:
    """Per :data:`EPOCH_UNITS` unit, the count (``n_<unit>``) of the epoch numbers ``ts`` that only that unit reads
    as a date, and an example (``eg_<unit>``: the smallest, or the first of ``shown``, the values as written): one
    aggregate for :func:`mixed_epoch_units`, in any polars query."""
    out: list[pl.Expr] = []
    for unit, _, low, high in EPOCH_UNITS:
        band = (ts >= low) & (ts < high)
        example = ts.filter(band).min() if shown is None else shown.filter(band).first()
        out += [band.sum().alias(f"n_{unit}"), example.alias(f"eg_{unit}")]
    return out


def mixed_epoch_units(facts: Mapping[str, Any], where: str) -> str | None:
    """The one-line refusal of an epoch column written in two units (``facts`` from :func:`epoch_unit_facts`), else None.

    Why refuse: a log whose logger moved from seconds to milliseconds was read in the unit of its typical value, and
    the 1,000 seconds rows became silent January-1970 events, squeezing four months into three hours of label windows
    (the reverse mix was refused as "beyond the year 9999" with the advice ``ts_unit: ms``, which led to the same).
    No ``data.ts_unit`` reads both, and which rows are which is for the user to fix in the file, with the counts below.
    """
    found = [(i, name, int(facts[f"n_{unit}"] or 0), facts[f"eg_{unit}"]) for i, (unit, name, _, _) in enumerate(EPOCH_UNITS)
             if facts.get(f"n_{unit}")]
    if len(found) < 2:
        return None
    parts = " and ".join(f"{n:,} value(s) look like epoch {name} (e.g. {eg!r})" for _, name, n, eg in found)
    (low_i, low, _, _), (high_i, high, _, _) = found[0], found[-1]
    return (f"{where} mixes epoch units: {parts}; no data.ts_unit reads both (read as {high} the {low} fall in January 1970, "
            f"read as {low} the {high} lie beyond the year 9999): write every time in one unit (e.g. the {low} times "
            f"{1000 ** (high_i - low_i):,}) and rerun")


def beyond_year_9999(source: str, max_seconds: int, unit: str | None = None) -> DataValidationError:
    """The one line for timestamps beyond the year 9999 once read in ``unit`` (None: not known, taken as
    seconds), naming the unit the file's numbers are in.

    Why name it: "milliseconds or microseconds?" left the user to count digits, and nanoseconds (19 digits,
    which no ``data.ts_unit`` reads) were not mentioned at all.
    """
    raw = max_seconds * _UNIT_SCALE.get(unit or "s", 1)
    if raw > 10**17:
        fix = "they look like epoch nanoseconds, which no data.ts_unit reads: divide them by 1,000 in the file and set data.ts_unit: us"
    elif raw > 10**14:
        fix = "they look like epoch microseconds: set data.ts_unit: us"
    else:
        fix = "they look like epoch milliseconds: set data.ts_unit: ms"
    read = f"read with data.ts_unit: {unit}" if unit else "as epoch seconds"
    return DataValidationError(f"{source}: column 'ts' has values beyond year 9999 {read} (max {raw}); {fix}")


def validate_events(
    events: pl.DataFrame, items: pl.DataFrame | None = None, source: str = "events", ts_unit: str | None = None
) -> pl.DataFrame:
    """Check and normalise an events table; return it cast to canonical dtypes, sorted by (user, ts).

    ``ts_unit``: the unit ``ts`` was read in from the file (its values are seconds now), which the
    beyond-year-9999 message names (None: seconds, or not known).

    Raises :class:`DataValidationError` naming the problem: missing column, null or non-integer
    timestamp, feedback outside {-1, +1}, empty table, events on items absent from ``items``.
    """
    require_columns(events, EVENT_COLUMNS, source)
    if events.height == 0:
        raise DataValidationError(f"{source}: no events")
    for col in ("user_id", "item_id", "ts", "feedback"):
        n_null = events[col].null_count()
        if n_null:
            raise DataValidationError(f"{source}: column {col!r} has {n_null} null value(s)")
    ts = events["ts"]
    if dated(ts.dtype, source):
        ts = ts.cast(pl.Datetime("us")).dt.epoch("s")
    elif not ts.dtype.is_integer():
        try:
            ts_float = ts.cast(pl.Float64, strict=True)
        except Exception as exc:
            raise DataValidationError(
                f"{source}: column 'ts' must hold integer epoch seconds or datetimes, got {ts.dtype}"
            ) from exc
        if (ts_float != ts_float.floor()).any():
            raise DataValidationError(f"{source}: column 'ts' has fractional values; expected epoch seconds")
        ts = ts_float.cast(pl.Int64)
    if (ts < 0).any():
        raise DataValidationError(f"{source}: column 'ts' has negative timestamps")
    if (ts > MAX_TS).any():
        raise beyond_year_9999(source, int(ts.max()), ts_unit if ts_unit in _UNIT_SCALE else None)  # type: ignore[arg-type]
    fb = events["feedback"]
    if not fb.dtype.is_numeric():
        raise DataValidationError(f"{source}: column 'feedback' must be numeric -1/+1, got {fb.dtype}")
    # -1.0 / 1.0 (what a CSV column with a missing value reads as) are the same values; compare as floats
    bad = fb.filter(~fb.cast(pl.Float64).is_in([float(DISLIKE), float(POSITIVE)]))
    if bad.len():
        raise DataValidationError(
            f"{source}: column 'feedback' must be -1 (dislike) or +1 (positive); found {bad.unique().to_list()[:5]}"
        )
    out = events.with_columns(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        ts.alias("ts").cast(pl.Int64),
        fb.cast(pl.Int8).alias("feedback"),
    )
    if items is not None:
        unknown = out.join(items.select(pl.col("item_id").cast(pl.String)), on="item_id", how="anti")
        if unknown.height:
            ex = unknown["item_id"].unique().head(5).to_list()
            raise DataValidationError(
                f"{source}: {unknown['item_id'].n_unique()} item id(s) are not in the items table, e.g. {ex}"
            )
    extra = [c for c in out.columns if c not in EVENT_COLUMNS]
    return out.select(list(EVENT_COLUMNS) + extra).sort(["user_id", "ts"], maintain_order=True)


def dated(dtype: pl.DataType, what: str, column: str = "ts", hint: str = "map ts to a date/time or epoch column") -> bool:
    """Whether a time column of ``dtype`` holds datetimes or dates (read as UTC epoch seconds); raises
    :class:`DataValidationError` in one line for a time of day or a duration, which have no date (polars
    counts them as temporal too, and casting them to a datetime ended in a traceback)."""
    base = dtype.base_type()
    if base in (pl.Time, pl.Duration):
        kind = "times of day" if base == pl.Time else "durations"
        raise DataValidationError(f"{what}: column {column!r} holds {kind} ({dtype}), not dates and times; {hint}")
    return base in (pl.Datetime, pl.Date)


INTEGRAL_FLOAT_TEXT = r"^(-?\d+)\.0+$"
"""An integer written as a float (``32.0``): how pandas writes an integer id column with a missing value."""

DECIMAL_TEXT = r"^-?\d*\.\d*[1-9]\d*$"
"""A decimal number that is not an integer (``0.5``): a column holding one is of real decimals, whose ids keep their text."""
_LONG = 2.0**63  # a float id at or beyond it is no integer an Int64 (or Spark's long) holds


def integral_float_ids(column: str, dtype: pl.DataType) -> pl.Expr:
    """Whether the id column's integers written as floats (``32.0``, as pandas writes an integer id
    column with a missing value) lose their ``.0``: one boolean, an aggregate over the whole column.

    A text column qualifies when it holds such an id, no decimal number that is not an integer
    (``0.5``: then it is a column of real decimals, and every id keeps its text) and no two ids that
    would become one (``10`` beside ``10.0``, or ``10.0`` beside ``10.00``: read value by value they
    merged, three items and their events into one). Text ids and bare integers do not stop it: a log
    that joins a pandas export (``33.0``) to a plain one (``32``), or float ids with one text id after
    the rows the reader infers from, lost most of its events on ids the items file writes ``33``. A
    float column qualifies when every finite id is an integer. An all-null column does not."""
    col = pl.col(column)
    if dtype.is_float():
        integral = col.is_finite() & (col.abs() < _LONG) & (col == col.floor())
        return (integral | ~col.is_finite()).all() & col.is_finite().any()
    if dtype != pl.String:
        return pl.lit(False)
    written = col.str.contains(INTEGRAL_FLOAT_TEXT).any()
    decimal = col.str.contains(DECIMAL_TEXT).any()
    merged = col.str.replace(INTEGRAL_FLOAT_TEXT, "${1}").n_unique() != col.n_unique()
    return (written & ~decimal & ~merged).fill_null(False)


def integral_float_text(column: str, whole: bool | None = None) -> pl.Expr:
    """A text id column without the ``.0`` of integers written as floats (``32.0`` as ``32``) when
    :func:`integral_float_ids` holds for the whole column, else as written. ``whole``: that answer,
    where it was found in a pass of its own (the streaming engine's), else it is the column's aggregate."""
    col = pl.col(column)
    cond = integral_float_ids(column, pl.String()) if whole is None else pl.lit(whole)
    return pl.when(cond).then(col.str.replace(INTEGRAL_FLOAT_TEXT, "${1}")).otherwise(col).alias(column)


def id_as_text(column: str, dtype: pl.DataType, whole: bool | None = None) -> pl.Expr:
    """An id column as text. Float ids are integers that pandas wrote as floats because one was
    missing (``32.0``): when every finite id of the column is integral (:func:`integral_float_ids`;
    ``whole``, where a pass of its own found it), each becomes its integer text (``32``), so it matches
    the other file's ``32``; otherwise every id keeps its float text (``0.5``, ``10.0``). NaN (how
    pandas, numpy and polars mark a missing value) and infinities are null: a missing id
    (``missing_id``), not a user or item ``"NaN"``."""
    col = pl.col(column)
    if not dtype.is_float():
        return col.cast(pl.String)
    cond = integral_float_ids(column, dtype) if whole is None else pl.lit(whole)
    finite = col.is_finite()
    integral = finite & (col.abs() < _LONG) & (col == col.floor()) & cond
    text = pl.when(integral).then(col.cast(pl.Int64, strict=False).cast(pl.String)).when(finite).then(col.cast(pl.String))
    return text.otherwise(None).alias(column)


def flatten_list_columns(items: pl.DataFrame, source: str = "items") -> pl.DataFrame:
    """An items table's list columns (a Parquet export's genres, tags or authors) as text.

    The category is the first non-empty element, as the MovieLens and Amazon sources take it (the
    category baselines compare one value); any other list column becomes its non-empty elements
    joined with ``", "``, the text the SIDs embed. A list of lists is refused in one line.
    """
    flat: list[pl.Expr] = []
    for name, dtype in items.schema.items():
        if not isinstance(dtype, (pl.List, pl.Array)):
            continue
        if dtype.inner is not None and dtype.inner.is_nested():
            raise DataValidationError(f"{source}: column {name!r} holds nested lists ({dtype}); flatten it to a list of text")
        col = pl.col(name).arr.to_list() if isinstance(dtype, pl.Array) else pl.col(name)
        parts = col.list.eval(pl.element().cast(pl.String).str.strip_chars()).list.eval(
            pl.element().filter(pl.element().is_not_null() & (pl.element() != ""))
        )
        flat.append((parts.list.first() if name == "category" else parts.list.join(", ")).alias(name))
    return items.with_columns(flat) if flat else items


def validate_items(items: pl.DataFrame, source: str = "items") -> pl.DataFrame:
    """Check and normalise an items table (unique string ids; title required; text/category filled)."""
    require_columns(items, ("item_id", "title"), source)
    items = flatten_list_columns(items, source)
    if items.height == 0:
        raise DataValidationError(f"{source}: no items")
    out = items.with_columns(id_as_text("item_id", items.schema["item_id"]))
    if out["item_id"].null_count():
        raise DataValidationError(f"{source}: column 'item_id' has null values")
    dup = out.filter(pl.col("item_id").is_duplicated())["item_id"].unique()
    if dup.len():
        raise DataValidationError(f"{source}: duplicate item id(s) {dup.head(5).to_list()}")
    out = out.with_columns(pl.col("title").cast(pl.String).fill_null("").str.strip_chars())
    empty = out.filter(pl.col("title") == "")["item_id"]
    if empty.len():
        raise DataValidationError(f"{source}: {empty.len()} item(s) have an empty title, e.g. {empty.head(5).to_list()}")
    for col in ("text", "category"):
        if col not in out.columns:
            out = out.with_columns(pl.lit("").alias(col))
        out = out.with_columns(pl.col(col).cast(pl.String).fill_null(""))
    extra = [c for c in out.columns if c not in ITEM_COLUMNS]
    return out.select(list(ITEM_COLUMNS) + extra)
