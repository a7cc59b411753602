"""``data.source: kuairand``: KuaiRand logs (explicit hates as dislikes) and video features."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.schema import DISLIKE, POSITIVE
from conrec.data.sources.base import Source
from conrec.data.sources.common import (
    existing_file,
    finish_tables,
    first_line,
    parse_timestamps,
    placeholder_items,
    read_table_file,
)
from conrec.errors import DataValidationError, require_columns

_KUAI_POSITIVE = ("is_click", "is_like", "long_view")


def kuairand_log_files(path: str | Path) -> list[Path]:
    """A log file, or every ``log*.csv`` in a directory (KuaiRand ships several log files)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("log*.csv"))
        if not files:
            raise DataValidationError(f"KuaiRand log directory {p} has no log*.csv files")
        return files
    return [existing_file(p, "KuaiRand log")]


def load_kuairand(
    log_path: str | Path | Sequence[str | Path], video_features_path: str | Path | None = None, repairs: RepairLog | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """KuaiRand logs: ``is_hate = 1`` is a dislike; otherwise a click, like or long view is a positive;
    other impressions are dropped. Time from ``time_ms`` (epoch ms), else ``date`` (YYYYMMDD) +
    ``hourmin`` (HHMM). Items from the video features file when given, else ``"video <id>"``.
    ``repairs``: the invalid-row policy and its counts (see :mod:`conrec.data.repair`; strict without it)."""
    paths = [Path(p) for p in log_path] if isinstance(log_path, (list, tuple)) else kuairand_log_files(log_path)  # type: ignore[arg-type]  # str|Path here
    frames = []
    for path in paths:
        existing_file(path, "KuaiRand log")
        what = f"KuaiRand log {path}"
        try:
            header = pl.read_csv(path, n_rows=0).columns
        except Exception as exc:
            raise DataValidationError(f"{what} could not be read as CSV: {first_line(exc)}") from exc
        missing = [c for c in ("user_id", "video_id", "is_hate") if c not in header]
        if missing:
            raise DataValidationError(f"{what}: missing column(s) {missing}; have {header}")
        pos_cols = [c for c in _KUAI_POSITIVE if c in header]
        if not pos_cols:
            raise DataValidationError(f"{what}: needs at least one of {list(_KUAI_POSITIVE)} for positives; have {header}")
        if "time_ms" in header:
            time_cols = ["time_ms"]
        elif "date" in header and "hourmin" in header:
            time_cols = ["date", "hourmin"]
        else:
            raise DataValidationError(f"{what}: missing time column(s): need 'time_ms' or 'date' + 'hourmin'; have {header}")
        try:
            raw = pl.read_csv(
                path,
                columns=["user_id", "video_id", "is_hate", *pos_cols, *time_cols],
                schema_overrides={"user_id": pl.String, "video_id": pl.String, "date": pl.String, "hourmin": pl.String},
            )
        except Exception as exc:
            raise DataValidationError(f"{what} could not be read as CSV: {first_line(exc)}") from exc
        if "time_ms" in time_cols:
            ts = parse_timestamps(raw["time_ms"], "ms", what, "time_ms")
        else:
            stamp = raw["date"].str.strip_chars() + raw["hourmin"].str.strip_chars().str.zfill(4)
            parsed = stamp.str.to_datetime("%Y%m%d%H%M", strict=False)
            bad = stamp.is_not_null() & parsed.is_null()
            if bad.any():
                row = int(bad.arg_true()[0])
                raise DataValidationError(
                    f"{what}: bad date/hourmin {raw['date'][row]!r}/{raw['hourmin'][row]!r} (row {row + 1})"
                )
            ts = parsed.dt.epoch("s")
        flags = raw.select(pl.col(["is_hate", *pos_cols]).cast(pl.Int8, strict=False).fill_null(0))
        feedback = (
            pl.when(flags["is_hate"] == 1)
            .then(pl.lit(DISLIKE, pl.Int8))
            .when(pl.any_horizontal([flags[c] == 1 for c in pos_cols]))
            .then(pl.lit(POSITIVE, pl.Int8))
            .otherwise(None)
        )
        frames.append(
            pl.DataFrame({"user_id": raw["user_id"], "item_id": raw["video_id"], "ts": ts})
            .with_columns(feedback=pl.select(feedback).to_series())
            .filter(pl.col("feedback").is_not_null())
        )
    events = pl.concat(frames)
    if video_features_path is not None:
        items = _kuairand_items(read_table_file(video_features_path, "KuaiRand video features"), Path(video_features_path))
    else:
        items = placeholder_items(events["item_id"], "video")
    return finish_tables(events, items, source="KuaiRand", log=repairs)


def _kuairand_items(raw: pl.DataFrame, path: Path) -> pl.DataFrame:
    """Title from a caption when there is one; category from the first tag (or category/type); text
    from whichever descriptive columns exist (KuaiRand basic features, KuaiRec caption file)."""
    require_columns(raw, ("video_id",), f"KuaiRand video features file {path}")
    df = raw.with_columns(pl.all().cast(pl.String).str.strip_chars()).with_columns(item_id=pl.col("video_id"))
    caption_cols = [c for c in ("caption", "manual_cover_text") if c in df.columns]
    generic = "video " + pl.col("item_id")
    caption = pl.coalesce([pl.when(pl.col(c).is_in(["", "UNKNOWN"]).not_()).then(pl.col(c)) for c in caption_cols]) if caption_cols else None
    title = pl.coalesce(caption, generic) if caption is not None else generic
    cat_sources = []
    if "first_level_category_name" in df.columns:
        cat_sources.append(pl.col("first_level_category_name"))
    if "tag" in df.columns:
        cat_sources.append(pl.when(pl.col("tag") != "").then("tag " + pl.col("tag").str.split(",").list.first()))
    if "video_type" in df.columns:
        cat_sources.append(pl.col("video_type"))
    category = pl.coalesce(cat_sources).fill_null("") if cat_sources else pl.lit("")
    described = [
        (c, label)
        for c, label in (
            ("topic_tag", "Topics"),
            ("tag", "Tags"),
            ("music_type", "Music type"),
            ("music_id", "Music"),
            ("video_type", "Type"),
            ("upload_type", "Upload"),
            ("author_id", "Author"),
        )
        if c in df.columns
    ]
    text_parts = [pl.when(pl.col(c).fill_null("") != "").then(pl.lit(f"{label}: ") + pl.col(c) + ".") for c, label in described]
    text = pl.concat_str(text_parts, separator=" ", ignore_nulls=True) if text_parts else pl.lit("")
    extra = [c for c in df.columns if c not in ("video_id", "item_id", "title", "text", "category")]
    return df.select(pl.col("item_id"), title.alias("title"), text.alias("text"), category.alias("category"), *extra)


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert cfg.events_path is not None  # load_source checks it (events_what below)
    return load_kuairand(cfg.events_path, cfg.items_path, log)


SOURCE = Source("kuairand", _load, events_what="KuaiRand log CSV or a directory of log*.csv")
