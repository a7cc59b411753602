"""``data.source: table``: any events CSV/TSV/Parquet (and optional items file) with a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.feedback_labels import map_labels
from conrec.data.repair import RepairLog, drop_rows, missing_id
from conrec.data.schema import EVENT_COLUMNS, ITEM_COLUMNS, id_as_text
from conrec.data.sources.base import Source
from conrec.data.sources.common import (
    TsUnit,
    all_neutral,
    check_column_sources,
    existing_file,
    finish_tables,
    not_feedback_values,
    parse_timestamps,
    placeholder_items,
    ratings_to_feedback,
    read_table_file,
    renaming,
    source_names,
)
from conrec.errors import ConfigError, DataValidationError, require_columns


def load_table(
    events_path: str | Path,
    items_path: str | Path | None,
    columns: dict[str, str] | None = None,
    dislike_max_rating: float = 2.0,
    like_min_rating: float = 4.0,
    ts_unit: TsUnit = "auto",
    log: RepairLog | None = None,
    rating_range: tuple[float, float] | None = None,
    feedback_labels: Mapping[str, int] | None = None,
    ts_format: str | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (and optionally items) from CSV/TSV/Parquet, with a source -> canonical column mapping.

    ``columns`` renames source columns in both files, e.g. ``{"uid": "user_id", "stars": "rating"}``.
    Events need ``user_id``, ``item_id``, ``ts`` and either ``feedback`` (-1/+1; 0 = neutral, dropped)
    or ``rating`` (converted with the thresholds); ``feedback_labels`` maps a text feedback column
    (:mod:`conrec.data.feedback_labels`). Without ``items_path`` each item's title is
    ``"item <id>"`` (then item text carries no meaning: prefer giving items).

    Bad rows and items (see :mod:`conrec.data.repair`) are repaired or dropped and counted in
    ``log`` when its policy is ``drop``; without a log the first one is an error.
    """
    lenient = log is not None and log.policy == "drop"
    columns = dict(columns or {})
    bad_targets = sorted(set(columns.values()) - set(EVENT_COLUMNS) - set(ITEM_COLUMNS) - {"rating"})
    if bad_targets:
        raise ConfigError(
            f"columns: unknown canonical column(s) {bad_targets}; "
            f"targets are {sorted(set(EVENT_COLUMNS) | set(ITEM_COLUMNS) | {'rating'})}"
        )
    ev_path = existing_file(events_path, "events")
    # Ids are read as strings so that "007" stays "007" (CSV type inference would make it 7).
    as_strings: dict[str, pl.DataType] = {c: pl.String() for c in source_names(columns, ("user_id", "item_id"))}
    events = read_table_file(ev_path, "events", schema_overrides=as_strings, values=source_names(columns, ("rating", "feedback", "ts")))
    items_raw = read_table_file(items_path, "items", schema_overrides=as_strings) if items_path is not None else None
    check_column_sources(columns, [*events.columns, *(items_raw.columns if items_raw is not None else [])])

    what = f"events file {ev_path}"
    renames, shadowed = renaming(columns, events.columns)
    events = events.drop(shadowed).rename(renames)
    require_columns(events, ("user_id", "item_id", "ts"), what)
    if "feedback" not in events.columns and "rating" not in events.columns:
        raise DataValidationError(
            f"{what}: needs a 'feedback' (-1/+1) or a 'rating' column (map one with `columns`); have {events.columns}"
        )
    ts_column = next((src for src, dst in renames.items() if dst == "ts"), "ts")  # the file's own name, in messages
    ts = parse_timestamps(events["ts"], ts_unit, what, ts_column, unreadable_to_null=lenient, ts_format=ts_format)
    events = events.with_columns(ts, *(id_as_text(c, events.schema[c]) for c in ("user_id", "item_id")))
    if "feedback" in events.columns:
        fb = events["feedback"]
        if feedback_labels and (fb.dtype == pl.Boolean or fb.dtype.is_numeric()):
            fb = fb.cast(pl.String)  # a flag: its values are labelled by their text, "true" / "1" (1.0 normalised to "1")
        if fb.dtype == pl.Boolean:
            raise DataValidationError(
                f"{what}: column 'feedback' holds true/false; say which is a dislike with data.feedback_labels, "
                "e.g. {'true': -1, 'false': 1} (conrec init proposes it when the column's name says)"
            )
        if feedback_labels and fb.dtype != pl.String:
            raise ConfigError(f"data.feedback_labels is set, but column 'feedback' of the {what} holds {fb.dtype}, not text, numbers or true/false")
        if fb.dtype == pl.String:
            if feedback_labels:
                fb_num = pl.select(map_labels(pl.lit(fb), feedback_labels)).to_series()
            else:
                fb_num = fb.str.strip_chars().cast(pl.Float64, strict=False)
            all_text = fb.null_count() < fb.len() and fb_num.null_count() == fb_num.len()  # structural: no row is usable
            if fb_num.null_count() > fb.null_count() and (not lenient or all_text):
                bad = fb.filter(fb.is_not_null() & fb_num.is_null())
                raise not_feedback_values(what, bad.unique().sort().head(3).to_list(), labelled=bool(feedback_labels))
            events = events.with_columns(feedback=fb_num)
        n_rows = events.height
        neutral = pl.col("feedback").fill_null(1) == 0  # 0: neutral, not a wart; counted under drop (as neutral ratings are)
        events = drop_rows(events, neutral, "neutral_feedback", log, what, "feedback") if lenient and log else events.filter(~neutral)
        if n_rows and events.height == 0:  # a bare "no events" followed
            raise DataValidationError(all_neutral(what, bool(feedback_labels)))
    else:
        events = ratings_to_feedback(events, dislike_max_rating, like_min_rating, what, log, rating_range)
    # before the placeholder items are built from the ids
    events = drop_rows(events, missing_id("user_id") | missing_id("item_id"), "missing_id", log or RepairLog(), what, ("user_id", "item_id"))

    if items_raw is not None:
        renames, shadowed = renaming(columns, items_raw.columns)
        items = items_raw.drop(shadowed).rename(renames)
        require_columns(items, ("item_id", "title"), f"items file {items_path}")
    else:
        items = placeholder_items(events["item_id"], "item")
    items_what = f"items file {items_path}" if items_path is not None else None  # not "table events.csv items"
    return finish_tables(events, items, source=f"table {ev_path.name}", log=log, items_source=items_what, ts_unit=ts_unit)


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert cfg.events_path is not None  # load_source checks it (events_what below)
    rating_range = (cfg.rating_range[0], cfg.rating_range[1]) if cfg.rating_range is not None else None
    return load_table(
        cfg.events_path, cfg.items_path, cfg.columns, cfg.dislike_max_rating, cfg.like_min_rating, cfg.ts_unit, log, rating_range,
        cfg.feedback_labels, cfg.ts_format,
    )


SOURCE = Source("table", _load, events_what="events CSV/Parquet file")
