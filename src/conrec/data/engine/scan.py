"""The ``table`` source read lazily: canonical events as a polars query, checked in one streaming pass.

Why not the loader: :func:`conrec.data.sources.table.load_table` reads the whole file into memory,
which is what out-of-core runs must avoid. This module applies the same mapping (``columns``
renames, ``feedback`` -1/0/+1 or ``rating`` thresholds, integer timestamps in s or ms) as a lazy
query that the streaming engine executes in row groups, and :func:`check_events` runs the
loaders' validation rules as aggregates over that query, so bad input still fails with one line
naming the problem before anything is written. Exact duplicate events are not refused there: the
polars streaming engine drops (and counts) them per user partition, where they always land together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from conrec.data.config import DataConfig, SplitConfig
from conrec.data.datetimes import SAMPLE, detect_format
from conrec.data.feedback_labels import map_labels
from conrec.data.schema import DISLIKE, EVENT_COLUMNS, MAX_TS, POSITIVE, validate_items
from conrec.data.sources.common import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    csv_separator,
    existing_file,
    file_suffix,
    placeholder_items,
    read_table_file,
    text_numbers,
)
from conrec.data.splits import Cutoffs, cutoff_exprs, cutoffs_from
from conrec.errors import ConfigError, DataValidationError

_MS_THRESHOLD = 100_000_000_000  # the loaders' rule: integer timestamps all above 1e11 are milliseconds
_CSV_BYTES_PER_ROW = 32  # a rough size of one event line, to estimate a text file's rows without reading it


def estimated_rows(path: Path) -> int | None:
    """Rows of an events file without reading it: exact for Parquet (footer), estimated for text;
    None when the file is missing or unreadable (the loader then reports it, in one line)."""
    try:
        if file_suffix(path) in PARQUET_SUFFIXES:
            return int(pq.ParquetFile(path).metadata.num_rows)
        return path.stat().st_size // _CSV_BYTES_PER_ROW
    except (OSError, ValueError, pa.ArrowException):
        return None


def _scan_file(path: Path, columns: dict[str, str]) -> pl.LazyFrame:
    fmt = file_suffix(path)
    if fmt in PARQUET_SUFFIXES:
        return pl.scan_parquet(path)
    if fmt in CSV_SUFFIXES and path.suffix.lower() != ".gz":
        ids = {"user_id", "item_id"} | {src for src, dst in columns.items() if dst in ("user_id", "item_id")}
        return pl.scan_csv(path, separator=csv_separator(path), schema_overrides={c: pl.String() for c in ids})
    raise DataValidationError(f"events file {path}: streaming reads .parquet, .csv or .tsv (not {fmt!r}); set data.streaming: off")


def scan_table(cfg: DataConfig, dedupe: bool = True) -> pl.LazyFrame:
    """Canonical events (``user_id, item_id, ts, feedback``) of the ``table`` source, in file order,
    neutral feedback dropped, as a lazy query; ``dedupe``: exact duplicate events dropped (first kept)
    under ``data.on_invalid: drop``, as the in-memory loaders do, by one global hash table over all
    rows. The polars streaming engine scans with ``dedupe=False`` and drops them per user partition
    instead (duplicates share their user), which needs no table over the whole log."""
    assert cfg.events_path is not None  # the source registry requires it for source=table
    path = existing_file(cfg.events_path, "events")
    what = f"events file {path}"
    lf = _scan_file(path, cfg.columns)
    schema = lf.collect_schema()
    lf = lf.rename({k: v for k, v in cfg.columns.items() if k in schema})
    schema = lf.collect_schema()
    missing = [c for c in ("user_id", "item_id", "ts") if c not in schema]
    if missing or ("feedback" not in schema and "rating" not in schema):
        raise DataValidationError(
            f"{what}: needs user_id, item_id, ts and feedback (-1/+1) or rating (map them with `columns`); have {list(schema)}"
        )
    lf = lf.with_columns(ts=_epoch_seconds(lf, schema["ts"], cfg, what))
    if "feedback" in schema:
        if cfg.feedback_labels and (schema["feedback"] in (pl.String, pl.Boolean) or schema["feedback"].is_integer()):
            lf = lf.with_columns(feedback=map_labels(pl.col("feedback"), cfg.feedback_labels))  # not named: null, an invalid row
        elif cfg.feedback_labels:
            raise ConfigError(f"data.feedback_labels is set, but column 'feedback' of the {what} holds {schema['feedback']}, not text, integers or true/false")
        elif not (schema["feedback"].is_integer() or schema["feedback"].is_float()):
            raise DataValidationError(f"{what}: column 'feedback' must be -1 (dislike), 0 (neutral) or +1, got {schema['feedback']}")
        lf = lf.filter(pl.col("feedback").is_null() | (pl.col("feedback") != 0))
    else:
        if schema["rating"] == pl.String:  # e.g. a decimal comma, "3,5"
            lf = lf.with_columns(rating=text_numbers(pl.col("rating")))
        fb = (
            pl.when(pl.col("rating") <= cfg.dislike_max_rating)
            .then(pl.lit(DISLIKE, pl.Int8))
            .when(pl.col("rating") >= cfg.like_min_rating)
            .then(pl.lit(POSITIVE, pl.Int8))
        )
        lf = lf.with_columns(feedback=fb).filter(pl.col("feedback").is_not_null())
    lf = lf.select(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        pl.col("ts"),
        pl.col("feedback"),  # cast to Int8 after check_events has seen the raw values
    )
    # exact duplicate events: dropped like the in-memory loaders do (global: every pass over the
    # result rebuilds the hash table; the streaming engine asks for dedupe=False and drops them per partition)
    return lf.unique(maintain_order=True) if dedupe and cfg.on_invalid == "drop" else lf


def _epoch_seconds(lf: pl.LazyFrame, dtype: pl.DataType, cfg: DataConfig, what: str) -> pl.Expr:
    ts = pl.col("ts")
    if dtype.is_temporal():
        return ts.cast(pl.Datetime("us")).dt.epoch("s")
    if dtype == pl.String:
        sample = lf.select(ts.drop_nulls().str.strip_chars()).head(SAMPLE).collect(engine="streaming")["ts"]
        if sample.len() and sample.cast(pl.Int64, strict=False).null_count() == sample.len():  # date/time strings
            fmt = cfg.ts_format if cfg.ts_format is not None else detect_format(sample, what, "ts")
            if fmt is None:
                raise DataValidationError(f"{what}: streaming reads date/time strings in a listed layout; set data.ts_format, or data.streaming: off")
            return ts.str.strip_chars().str.to_datetime(fmt, strict=False, time_unit="us").dt.epoch("s")  # unreadable: null, invalid
        ts = ts.str.strip_chars().cast(pl.Int64, strict=False)
    elif not dtype.is_integer():
        raise DataValidationError(f"{what}: streaming reads integer epoch timestamps or datetimes, got {dtype}; set data.streaming: off")
    ts = ts.cast(pl.Int64)
    unit = cfg.ts_unit
    if unit == "auto":
        low = lf.select(ts.min()).collect(engine="streaming").item()
        unit = "ms" if low is not None and low > _MS_THRESHOLD else "s"
    return ts // 1000 if unit == "ms" else ts


def table_items(cfg: DataConfig, events: pl.LazyFrame) -> pl.DataFrame:
    """The validated items of a ``table`` source: its items file, or one placeholder per item id
    (in order of first appearance, as the loader makes them)."""
    if cfg.items_path is None:
        ids = events.select("item_id").unique(maintain_order=True).collect(engine="streaming")["item_id"]
        return validate_items(placeholder_items(ids, "item"), source="table items")
    raw = read_table_file(cfg.items_path, "items", schema_overrides={"item_id": pl.String()})
    return validate_items(raw.rename({k: v for k, v in cfg.columns.items() if k in raw.columns}), source="table items")


@dataclass(frozen=True)
class EventFacts:
    """What one streaming pass over the events establishes: the split cut-offs and the item count."""

    cuts: Cutoffs
    items_with_events: int


def check_events(events: pl.LazyFrame, items: pl.DataFrame, split: SplitConfig, what: str) -> EventFacts:
    """The loaders' validation rules (:func:`conrec.data.schema.validate_events`) as aggregates:
    raises :class:`DataValidationError` naming the problem, else returns the cut-offs (computed on
    ``events`` as given: exact duplicates, if any, count in the quantiles)."""
    items_with_events = check_event_rules(events, items, what)
    # the quantiles on their own query: it reads only the ts column, whatever the engine does with quantiles
    valid, test = events.select(cutoff_exprs(split)).collect(engine="streaming").row(0)
    return EventFacts(cuts=cutoffs_from(valid, test), items_with_events=items_with_events)


def check_event_rules(events: pl.LazyFrame, items: pl.DataFrame, what: str) -> int:
    """:func:`check_events` without the cut-offs: the validation rules only; returns the number of
    distinct items with events. Exact duplicate events change none of these facts, so it may run on
    the events before they are deduplicated."""
    fb = pl.col("feedback")
    facts = events.select(
        n=pl.len(),
        **{f"null_{c}": pl.col(c).null_count() for c in EVENT_COLUMNS},
        bad_feedback=(fb.is_not_null() & ~fb.cast(pl.Float64).is_in([float(DISLIKE), float(POSITIVE)])).sum(),
        negative_ts=(pl.col("ts") < 0).sum(),
        huge_ts=(pl.col("ts") > MAX_TS).sum(),
        items_with_events=pl.col("item_id").n_unique(),
    ).collect(engine="streaming").row(0, named=True)
    report_invalid(facts, what)
    unknown = (
        events.select("item_id")
        .join(items.lazy().select("item_id"), on="item_id", how="anti")
        .select(n=pl.col("item_id").n_unique(), example=pl.col("item_id").unique().sort().head(5).implode())
        .collect(engine="streaming")
        .row(0, named=True)
    )
    report_unknown_items(unknown["n"], unknown["example"], what)
    return int(facts["items_with_events"])


def report_invalid(facts: dict[str, Any], what: str) -> None:
    """Raise :class:`DataValidationError` for the first broken rule in an engine's validation
    aggregate (keys: ``n``, ``null_<column>``, ``bad_feedback``, ``negative_ts``, ``huge_ts``), so
    every engine words a problem the same way."""
    if not facts.get("n"):
        raise DataValidationError(f"{what}: no events")
    for c in EVENT_COLUMNS:
        if facts[f"null_{c}"]:
            raise DataValidationError(f"{what}: column {c!r} has {facts[f'null_{c}']} null or unreadable value(s)")
    if facts["bad_feedback"]:
        raise DataValidationError(f"{what}: column 'feedback' must be -1 (dislike) or +1 (positive); {facts['bad_feedback']} value(s) are not")
    if facts["negative_ts"]:
        raise DataValidationError(f"{what}: column 'ts' has negative timestamps")
    if facts["huge_ts"]:
        raise DataValidationError(f"{what}: column 'ts' has values beyond year 9999 as epoch seconds: milliseconds? set data.ts_unit: ms")


def report_unknown_items(n: int, examples: list[str], what: str) -> None:
    """Raise for events on items missing from the items table (``examples``: the first few ids, sorted)."""
    if n:
        raise DataValidationError(f"{what}: {n} item id(s) are not in the items table, e.g. {examples}")
