"""The ``table`` source read lazily: canonical events as a polars query, checked in one streaming pass.

Why not the loader: :func:`conrec.data.sources.table.load_table` reads the whole file into memory,
which is what out-of-core runs must avoid. This module applies the same mapping (``columns``
renames, ``feedback`` -1/0/+1 or words, ``rating`` thresholds, timestamps) as a lazy query that
the streaming engine executes in row groups, and :func:`check_event_rules` applies the loaders'
invalid-row policy (``data.on_invalid``) as one aggregate over that query: under ``drop`` the same
rows are dropped and counted per kind as the loaders count them, under ``error`` the first problem
stops the stage with one line, before anything is written. Exact duplicate events are not handled
there: the polars streaming engine drops (and counts) them per user partition, where they always
land together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from conrec.data.config import DataConfig
from conrec.data.datetimes import SAMPLE, detect_format, digit_layout_width, inferred_dates, read_layout
from conrec.data.feedback_labels import map_labels
from conrec.data.repair import UNKNOWN_SAMPLE, InvalidPolicy, RepairLog, invalid_kinds, missing_id, nothing_valid, repair_items, unknown_item_details
from conrec.data.schema import (
    DISLIKE,
    EVENT_COLUMNS,
    MAX_TS,
    POSITIVE,
    beyond_year_9999,
    dated,
    epoch_unit_facts,
    id_as_text,
    integral_float_ids,
    mixed_epoch_units,
    validate_items,
)
from conrec.data.sources.common import (
    CSV_SUFFIXES,
    INFER_ROWS,
    PARQUET_SUFFIXES,
    PER_SECOND,
    all_neutral,
    categoricals_as_text,
    check_column_sources,
    csv_reading,
    csv_separator,
    existing_file,
    file_suffix,
    float_id_columns,
    has_rows,
    placeholder_items,
    rating_feedback,
    read_table_file,
    refuse_feedback_words,
    renaming,
    source_names,
    text_numbers,
)
from conrec.errors import ConfigError, DataValidationError

_MS_THRESHOLD = 100_000_000_000  # the loaders' rule: integer timestamps all above 1e11 are milliseconds
_CSV_BYTES_PER_ROW = 32  # a rough size of one event line, to estimate a text file's rows without reading it
_GZIP_RATIO = 3  # a rough compression ratio of an events CSV (2.7x measured on a 3M-row log of numeric ids)


def estimated_rows(path: Path) -> int | None:
    """Rows of an events file without reading it: exact for Parquet (footer), estimated for text;
    None when the file is missing or unreadable (the loader then reports it, in one line)."""
    try:
        if file_suffix(path) in PARQUET_SUFFIXES:
            return int(pq.ParquetFile(path).metadata.num_rows)
        return path.stat().st_size * (_GZIP_RATIO if path.suffix.lower() == ".gz" else 1) // _CSV_BYTES_PER_ROW
    except (OSError, ValueError, pa.ArrowException):
        return None


def _scan_file(path: Path, columns: dict[str, str], engine: str = "polars", header_only: bool = False) -> pl.LazyFrame:
    """The file as a lazy query, its columns typed as the loader reads them. ``header_only``: for its
    schema alone (no pass over the ids to tell whether a float id column is integers: :func:`_whole_float_ids`)."""
    fmt = file_suffix(path)
    if fmt in PARQUET_SUFFIXES:  # categorical columns as text, as the loader reads them
        lf = pl.scan_parquet(path)
        return lf.with_columns(categoricals_as_text(lf.collect_schema()))
    if fmt in CSV_SUFFIXES:  # .gz too (read in a stream); column types as the loader infers them, values as leniently
        ids = {c: pl.String() for c in source_names(columns, ("user_id", "item_id"))}
        values = source_names(columns, ("rating", "feedback", "ts"))
        options: dict[str, Any] = {"separator": csv_separator(path), "infer_schema_length": INFER_ROWS}
        inferred = pl.scan_csv(path, **options).collect_schema()
        texts, _ = csv_reading(inferred, ids, values)
        lf = pl.scan_csv(path, schema_overrides=texts, **options)
        floats = float_id_columns(inferred, ids)
        whole = dict.fromkeys(floats, False) if header_only else _whole_float_ids(path, lf, {c: pl.String() for c in floats})
        return lf.with_columns(csv_reading(inferred, ids, values, whole)[1])
    if engine == "spark":
        raise DataValidationError(f"events file {path}: the Spark engine reads .parquet, .csv or .tsv (not {fmt!r})")
    raise DataValidationError(f"events file {path}: streaming reads .parquet, .csv or .tsv (not {fmt!r}); set data.streaming: off")


_ID_VERDICTS: dict[Path, tuple[tuple[int, ...], dict[tuple[str, str], bool]]] = {}
"""Per events file (resolved): its stamp when judged (:func:`_stamp`), and :func:`_whole_float_ids`' verdict per (source
column, type). A stage run scans the file more than once (its items, then its events; the bad feedback's detail),
and each scan asked the verdict again: one more pass over the whole file each time. A file changed since is judged anew."""


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    """What tells a file changed: its modification time and size, and its inode and status-change time.

    Why the last two: a file replaced by one of the same size with the modification time kept (``cp -p``, ``rsync -a``,
    an archive's extraction, ``os.utime``) kept the old verdict in a long-lived process (a notebook), so ``10.0`` was
    read as ``10`` beside ``20.5``; no tool can set the status-change time, and a replacement is a new inode."""
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns)


def _whole_float_ids(path: Path, lf: pl.LazyFrame, columns: dict[str, pl.DataType], sources: dict[str, str] | None = None) -> dict[str, bool]:
    """Per id column of ``columns`` (text or float) of ``lf``, the scan of ``path``, whether every id is an integer
    written as a float (:func:`conrec.data.schema.integral_float_ids`), in one streaming pass of its own: asked inside the
    query, the answer would be an aggregate over the whole log in every later pass (and over the rows a filter kept,
    where the loader asks it of every row). Remembered per file (:data:`_ID_VERDICTS`); ``sources``: the file's name of
    a column ``lf`` renamed (the verdict is about the file's column, whatever ``data.columns`` calls it)."""
    if not columns:
        return {}
    stat = path.stat()  # before the read: a file changed during it is judged anew next time
    stamp, verdicts = _ID_VERDICTS.get(path.resolve(), (None, {}))
    if stamp != _stamp(stat):
        verdicts = {}
        _ID_VERDICTS[path.resolve()] = (_stamp(stat), verdicts)
    key = {c: ((sources or {}).get(c, c), str(t)) for c, t in columns.items()}
    if asked := {c: t for c, t in columns.items() if key[c] not in verdicts}:
        row = lf.select(integral_float_ids(c, t) for c, t in asked.items()).collect(engine="streaming").row(0, named=True)
        verdicts.update({key[c]: row[c] for c in asked})
    return {c: verdicts[key[c]] for c in columns}


def scan_table(cfg: DataConfig, keep_neutral: bool = False, source_values: bool = False) -> pl.LazyFrame:
    """Canonical events (``user_id, item_id, ts, feedback``) of the ``table`` source, in file order,
    neutral feedback dropped, as a lazy query. Invalid rows are still there, as nulls where a value
    did not read (a timestamp, a rating, a feedback word) and as they are otherwise, and so are exact
    duplicates: :func:`check_event_rules` counts and drops (or refuses) the first, the polars
    streaming engine the second, per user partition (duplicates share their user), which needs no
    hash table over the whole log. ``keep_neutral``: under ``on_invalid: drop`` keep the neutral events
    (feedback 0), for :func:`check_event_rules` to count (``neutral_rating`` or ``neutral_feedback``: :func:`neutral_kind`). ``source_values``: keep the feedback or
    rating as the file writes it, as text, in a fifth column ``source_feedback`` or ``source_rating`` (for
    :mod:`conrec.data.bad_feedback`)."""
    assert cfg.events_path is not None  # the source registry requires it for source=table
    path = existing_file(cfg.events_path, "events")
    what = f"events file {path}"
    lf = _scan_file(path, cfg.columns, cfg.engine)
    has_rows(lf.head(1).collect(engine="streaming"), path, "events")  # one row read, not the file
    schema = lf.collect_schema()
    _check_column_sources(cfg, list(schema))
    renames, shadowed = renaming(cfg.columns, list(schema))
    lf = lf.drop(shadowed).rename(renames)
    schema = lf.collect_schema()
    missing = [c for c in ("user_id", "item_id", "ts") if c not in schema]
    if missing or ("feedback" not in schema and "rating" not in schema):
        raise DataValidationError(
            f"{what}: needs user_id, item_id, ts and feedback (-1/+1) or rating (map them with `columns`); have {list(schema)}"
        )
    lf = lf.with_columns(ts=_epoch_seconds(lf, schema["ts"], cfg, what))
    source = "feedback" if "feedback" in schema else "rating"
    if source_values:
        lf = lf.with_columns(pl.col(source).cast(pl.String).alias(f"source_{source}"))
    if "feedback" in schema:
        if cfg.feedback_labels and (schema["feedback"] in (pl.String, pl.Boolean) or schema["feedback"].is_numeric()):
            lf = lf.with_columns(feedback=map_labels(pl.col("feedback"), cfg.feedback_labels))  # not named: null, an invalid row
        elif cfg.feedback_labels:
            raise ConfigError(f"data.feedback_labels is set, but column 'feedback' of the {what} holds {schema['feedback']}, not text, numbers or true/false")
        elif schema["feedback"] == pl.String:  # numbers as text, or a few unreadable rows: as the loader reads them
            lf = lf.with_columns(feedback=_text_feedback(lf, what))
        elif not (schema["feedback"].is_integer() or schema["feedback"].is_float()):
            raise DataValidationError(f"{what}: column 'feedback' must be -1 (dislike), 0 (neutral) or +1, got {schema['feedback']}")
    else:
        rating = text_numbers(pl.col("rating")) if schema["rating"] == pl.String else pl.col("rating").cast(pl.Float64)  # "3,5" is 3.5
        rating_range = (cfg.rating_range[0], cfg.rating_range[1]) if cfg.rating_range is not None else None
        lf = lf.with_columns(feedback=rating_feedback(rating, cfg.dislike_max_rating, cfg.like_min_rating, rating_range))
    # neutral events stay under drop, for check_event_rules to count (neutral_rating, neutral_feedback), as the loader counts them
    keep_neutral = keep_neutral and cfg.on_invalid == "drop"
    kept = lf.filter(pl.col("feedback").is_null() | (pl.col("feedback") != 0))
    floats = {c: schema[c] for c in ("user_id", "item_id") if schema[c].is_float()}  # a Parquet file's float ids
    whole = _whole_float_ids(path, lf, floats, {dst: src for src, dst in renames.items()})
    out = (lf if keep_neutral else kept).select(
        id_as_text("user_id", schema["user_id"], whole.get("user_id")),
        id_as_text("item_id", schema["item_id"], whole.get("item_id")),
        pl.col("ts"),
        pl.col("feedback"),  # cast to Int8 after check_event_rules has seen the raw values
        *([pl.col(f"source_{source}")] if source_values else []),
    )
    if "feedback" in schema and kept.select("feedback").head(1).collect(engine="streaming").height == 0:  # read up to the first kept row
        raise DataValidationError(all_neutral(what, bool(cfg.feedback_labels)))  # it said "no items" (none to build from)
    return out


def neutral_kind(cfg: DataConfig) -> str:
    """The kind of :data:`conrec.data.repair.WARTS` the ``table`` file's neutral events (feedback 0) count under:
    ``neutral_feedback`` when it has a feedback column (a 0, or a word ``data.feedback_labels`` maps to 0), else
    ``neutral_rating`` (a rating between the thresholds). Read from the header: the scanned events hold only ``feedback``."""
    assert cfg.events_path is not None
    schema = _scan_file(existing_file(cfg.events_path, "events"), cfg.columns, cfg.engine, header_only=True).collect_schema()
    renames, shadowed = renaming(cfg.columns, list(schema))
    return "neutral_feedback" if "feedback" in {renames.get(c, c) for c in schema if c not in shadowed} else "neutral_rating"


def _check_column_sources(cfg: DataConfig, event_columns: list[str]) -> None:
    """The loader's :func:`check_column_sources`, with the items file's header alone."""
    present = list(event_columns)
    if set(cfg.columns) - set(present) and cfg.items_path is not None:
        items = existing_file(cfg.items_path, "items")
        try:
            present += list(_scan_file(items, {}, header_only=True).collect_schema())
        except Exception:  # another suffix, a malformed file: the items reader (table_items) refuses it in its own line
            return
    check_column_sources(cfg.columns, present)


def _text_feedback(lf: pl.LazyFrame, what: str) -> pl.Expr:
    """A text feedback column as numbers, as the loader reads it: a value that does not read is null
    (an invalid row, counted), but a column in which no sampled value reads is words, refused in one
    line that names ``data.feedback_labels``."""
    refuse_feedback_words(lf.select(pl.col("feedback").drop_nulls().head(SAMPLE)).collect(engine="streaming")["feedback"], what)
    return pl.col("feedback").str.strip_chars().cast(pl.Float64, strict=False)


def _epoch_seconds(lf: pl.LazyFrame, dtype: pl.DataType, cfg: DataConfig, what: str) -> pl.Expr:
    ts = pl.col("ts")
    if dated(dtype, what):
        return ts.cast(pl.Datetime("us")).dt.epoch("s")
    if cfg.ts_format is not None and (dtype == pl.String or dtype.is_integer()):  # as the loader: every value in the layout
        text = ts.cast(pl.String).str.strip_chars()
        if dtype.is_integer() and (width := digit_layout_width(cfg.ts_format)) is not None:  # 02122023 read as 2122023
            text = text.str.zfill(width)
        return read_layout(text, cfg.ts_format).dt.epoch("s")
    if dtype == pl.String:
        sample = lf.select(ts.drop_nulls().str.strip_chars()).head(SAMPLE).collect(engine="streaming")["ts"]
        fmt = detect_format(sample, what, "ts") if sample.len() and sample.cast(pl.Int64, strict=False).null_count() == sample.len() else None
        if fmt is not None:  # date/time strings
            return read_layout(ts.str.strip_chars(), fmt).dt.epoch("s")  # unreadable: null, invalid
        if sample.cast(pl.Int64, strict=False).null_count() == sample.len() and inferred_dates(sample):  # only polars' inference reads them
            raise DataValidationError(f"{what}: column 'ts' holds date/time strings in no listed layout; set data.ts_format{_in_memory(cfg)}")
        # epoch numbers, integers or floats (1703528010.0, 1.7e9), as the loaders read them; a value that is neither: null, invalid
        integer = ts.str.strip_chars().cast(pl.Int64, strict=False)
        number = _finite_floor(lf, ts.str.strip_chars().cast(pl.Float64, strict=False), cfg, what, integer.is_null())
        ts = pl.coalesce(integer, number)
    elif dtype.is_float() or dtype.is_decimal():  # as the loaders read them: NaN and infinities null (invalid rows), fractions refused
        ts = _finite_floor(lf, ts.cast(pl.Float64), cfg, what)
    elif not dtype.is_integer():
        reader = "the Spark engine reads" if cfg.engine == "spark" else "streaming reads"
        raise DataValidationError(f"{what}: {reader} epoch timestamps or datetimes, got {dtype}{'' if cfg.engine == 'spark' else '; set data.streaming: off'}")
    ts = ts.cast(pl.Int64)
    facts = lf.select(*epoch_unit_facts(ts), low=ts.min()).collect(engine="streaming").row(0, named=True)  # one pass
    if mixed := mixed_epoch_units(facts, f"{what}: column 'ts'"):
        raise DataValidationError(mixed)
    unit = cfg.ts_unit
    if unit == "auto":
        low = facts["low"]
        unit = "ms" if low is not None and low > _MS_THRESHOLD else "s"
    return ts // PER_SECOND[unit] if unit != "s" else ts


def _in_memory(cfg: DataConfig) -> str:
    """How to have a file read by the loader instead of this scan: streaming off, where it is the scan that reads it."""
    return "" if cfg.engine == "spark" else ", or data.streaming: off"


def _finite_floor(lf: pl.LazyFrame, ts: pl.Expr, cfg: DataConfig, what: str, where: pl.Expr | None = None) -> pl.Expr:
    """Float timestamps as the loaders read them: NaN and infinities null (invalid rows), floored (a fraction
    of a second too, in every unit)."""
    ts = pl.when(ts.is_finite()).then(ts)
    return ts.floor().cast(pl.Int64)  # fractions of a second floored, as the loaders floor them


def table_items(cfg: DataConfig, events: pl.LazyFrame, log: RepairLog) -> pl.DataFrame:
    """The validated items of a ``table`` source: its items file, repaired under ``log``'s policy as the
    loader does (:func:`conrec.data.repair.repair_items`), or one placeholder per item id (in order of
    first appearance, as the loader makes them)."""
    if cfg.items_path is None:
        kept = ~missing_id("item_id") & (pl.col("feedback").fill_null(1) != 0)  # a neutral rating's item is none, as in the loader
        ids = events.select(pl.col("item_id").filter(kept)).unique(maintain_order=True).collect(engine="streaming")["item_id"]
        return validate_items(placeholder_items(ids, "item"), source="table items")
    as_text: dict[str, pl.DataType] = {c: pl.String() for c in source_names(cfg.columns, ("item_id",))}  # 0032 stays 0032, as the loader reads it
    raw = read_table_file(cfg.items_path, "items", schema_overrides=as_text)
    renames, shadowed = renaming(cfg.columns, raw.columns)
    raw = raw.drop(shadowed).rename(renames)
    what = f"items file {cfg.items_path}"  # as the loader names it
    return validate_items(repair_items(raw, log, what), source=what)


@dataclass(frozen=True)
class CheckedEvents:
    """The events that passed the loaders' validation rules, and what that established."""

    events: pl.LazyFrame  # the valid rows: the input without the invalid ones (under on_invalid: error, the input)
    items_with_events: int
    dropped: dict[str, int]  # invalid rows dropped, per kind of :data:`conrec.data.repair.WARTS` (empty under error)
    details: dict[str, str] = field(default_factory=dict)  # beside a kind's count (:func:`conrec.data.repair.unknown_item_details`)


def check_event_rules(
    events: pl.LazyFrame, items: pl.DataFrame, what: str, on_invalid: InvalidPolicy = "error", ts_unit: str | None = None,
    neutral: str = "neutral_rating",
) -> CheckedEvents:
    """The loaders' validation rules (:func:`conrec.data.schema.validate_events` after
    :func:`conrec.data.repair.repair_events`) as one streaming aggregate over ``events``.

    ``on_invalid: error``: raises :class:`DataValidationError` naming the first problem. ``drop``:
    counts the invalid rows per kind, exactly as the loader would, and returns the query without
    them; what no policy repairs (no valid event at all, timestamps beyond year 9999) still raises.
    ``ts_unit``: the unit the times were read in, for that message to name the one they are in; ``neutral``: the kind
    a feedback of 0 counts under (:func:`neutral_kind`). Exact duplicate events change none of these facts, so this may run before they are dropped.
    """
    if on_invalid == "error":
        return CheckedEvents(events, _strict_rules(events, items, what, ts_unit), {})
    known = pl.col("item_id").is_in(items["item_id"].implode())
    seen = pl.lit(False)
    counts: dict[str, pl.Expr] = {}
    for kind, bad in invalid_kinds(known, neutral).items():
        counts[kind] = (bad.fill_null(False) & ~seen).sum()
        seen = seen | bad.fill_null(False)
    valid = ~seen
    facts = events.select(
        **counts,
        n=valid.sum(),
        huge_ts=(valid & (pl.col("ts") > MAX_TS)).sum(),
        max_ts=pl.col("ts").filter(valid).max(),
        items_with_events=pl.col("item_id").filter(valid).n_unique(),
    ).collect(engine="streaming").row(0, named=True)
    dropped = {k: int(facts[k]) for k in counts if facts[k]}
    if dropped and not facts["n"]:
        unknown = events.filter(~known.fill_null(True)).select(pl.col("item_id").unique(maintain_order=True).head(3)).collect(engine="streaming")
        raise nothing_valid(what, dropped, unknown["item_id"].to_list(), items["item_id"].to_list())
    report_invalid({"n": facts["n"], "huge_ts": facts["huge_ts"], "max_ts": facts["max_ts"], "ts_unit": ts_unit}, what)  # the invalid rows are dropped: the stage counts them
    details: dict[str, str] = {}
    if dropped.get("unknown_item"):  # a second pass, only when events were on unknown items
        unknown = events.filter(~known.fill_null(True)).select(pl.col("item_id").unique().head(UNKNOWN_SAMPLE)).collect(engine="streaming")
        details = unknown_item_details(unknown["item_id"].to_list(), items["item_id"].to_list())
    return CheckedEvents(events.filter(valid), int(facts["items_with_events"]), dropped, details)


def _strict_rules(events: pl.LazyFrame, items: pl.DataFrame, what: str, ts_unit: str | None = None) -> int:
    """``on_invalid: error``: the first broken rule raises; returns the number of distinct items with events."""
    fb = pl.col("feedback")
    rules = {  # report_invalid's order: the first broken one is the error
        **{f"null_{c}": missing_id(c) if c in ("user_id", "item_id") else pl.col(c).is_null() for c in EVENT_COLUMNS},  # an empty id is missing
        "bad_feedback": fb.is_not_null() & ~fb.cast(pl.Float64).is_in([float(DISLIKE), float(POSITIVE)]),
        "negative_ts": pl.col("ts") < 0,
    }
    facts = events.select(
        n=pl.len(),
        **{name: rule.sum() for name, rule in rules.items()},
        huge_ts=(pl.col("ts") > MAX_TS).sum(),
        max_ts=pl.col("ts").max(),
        items_with_events=pl.col("item_id").n_unique(),
    ).collect(engine="streaming").row(0, named=True)
    broken = next((name for name, _ in rules.items() if facts[name]), None)
    if facts["n"] and broken is not None:  # a few of its rows, as the in-memory reader shows them (a second pass, on the error path only)
        rows = events.filter(rules[broken]).select(list(EVENT_COLUMNS)).head(3).collect(engine="streaming").to_dicts()
        facts["examples"] = {broken: rows}
    report_invalid({**facts, "ts_unit": ts_unit}, what)
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
    aggregate (keys: ``n``, the valid events; ``null_<column>``, ``bad_feedback``, ``negative_ts``,
    ``huge_ts``, each absent where already dropped; optionally ``examples``, a few rows per rule), so every
    engine words a problem the same way."""
    examples = facts.get("examples") or {}

    def eg(rule: str) -> str:  # the rule's example rows, where the engine collected some (the streaming reader does)
        return f", e.g. {examples[rule]}" if examples.get(rule) else ""

    if not facts.get("n"):
        raise DataValidationError(f"{what}: no events")
    for c in EVENT_COLUMNS:
        if facts.get(f"null_{c}"):
            raise DataValidationError(f"{what}: column {c!r} has {facts[f'null_{c}']} null, empty or unreadable value(s){eg(f'null_{c}')}")
    if facts.get("bad_feedback"):
        raise DataValidationError(
            f"{what}: column 'feedback' must be -1 (dislike) or +1 (positive); {facts['bad_feedback']} value(s) are not{eg('bad_feedback')}"
        )
    if facts.get("negative_ts"):
        raise DataValidationError(f"{what}: column 'ts' has {facts['negative_ts']} negative timestamp(s){eg('negative_ts')}")
    if facts.get("huge_ts"):
        unit = facts.get("ts_unit")
        raise beyond_year_9999(what, int(facts.get("max_ts") or MAX_TS), unit if unit in ("s", "ms", "us") else None)


def report_unknown_items(n: int, examples: list[str], what: str) -> None:
    """Raise for events on items missing from the items table (``examples``: the first few ids, sorted)."""
    if n:
        raise DataValidationError(f"{what}: {n} item id(s) are not in the items table, e.g. {examples}")
