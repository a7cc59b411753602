"""``data.source: amazon``: Amazon reviews, 2018 and 2023 releases (JSON lines, optional metadata)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.sources.base import Source
from conrec.data.sources.common import (
    TsUnit,
    existing_file,
    finish_tables,
    first_json_record,
    parse_timestamps,
    placeholder_items,
    ratings_to_feedback,
    read_jsonl,
)
from conrec.errors import DataValidationError


def load_amazon(
    reviews_jsonl: str | Path,
    meta_jsonl: str | Path | None = None,
    dislike_max_rating: float = 2.0,
    like_min_rating: float = 4.0,
    log: RepairLog | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Amazon reviews JSONL (optionally .gz). 2018: ``reviewerID, asin, overall, unixReviewTime`` (s);
    2023: ``user_id, parent_asin|asin, rating, timestamp`` (ms). Items are keyed by ``parent_asin``
    when present (2023 metadata is keyed by it). Metadata: title, main category, categories,
    description. Duplicate metadata rows (the 2018 dumps have some) keep the first.
    ``log``: the invalid-row policy and its counts (see :mod:`conrec.data.repair`; strict without it)."""
    rp = existing_file(reviews_jsonl, "Amazon reviews")
    what = f"Amazon reviews file {rp}"
    first = first_json_record(rp, "Amazon reviews")
    if "reviewerID" in first or "overall" in first:
        spec = {"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "ts"}
        unit: TsUnit = "s"
    else:
        item_key = "parent_asin" if "parent_asin" in first else "asin"
        spec = {"user_id": "user_id", item_key: "item_id", "rating": "rating", "timestamp": "ts"}
        unit = "ms"
    missing = [k for k in spec if k not in first]
    if missing:
        raise DataValidationError(f"{what}: missing field(s) {missing} in the first record; have {sorted(first)}")
    schema = {k: (pl.Float64 if v == "rating" else pl.Int64 if v == "ts" else pl.String) for k, v in spec.items()}
    raw = read_jsonl(rp, "Amazon reviews", schema).rename(spec)  # type: ignore[arg-type]
    if log is None or log.policy != "drop":  # under drop, finish_tables drops and counts them (missing_id, ...)
        for col in ("user_id", "item_id", "ts", "rating"):
            n_null = raw[col].null_count()
            if n_null:
                src = next(k for k, v in spec.items() if v == col)
                raise DataValidationError(f"{what}: field {src!r} is missing in {n_null} record(s)")
    raw = raw.with_columns(parse_timestamps(raw["ts"], unit, what))
    events = ratings_to_feedback(raw, dislike_max_rating, like_min_rating, what, log, count_neutral=False)
    if meta_jsonl is not None:
        items = _amazon_items(existing_file(meta_jsonl, "Amazon metadata"))
    else:
        items = placeholder_items(events["item_id"], "product")
    return finish_tables(events, items, source="Amazon", log=log, ts_unit=unit)


def _amazon_items(path: Path) -> pl.DataFrame:
    first = first_json_record(path, "Amazon metadata")
    key = "parent_asin" if "parent_asin" in first else "asin"
    if key not in first:
        raise DataValidationError(f"Amazon metadata file {path}: missing field 'parent_asin'/'asin'; have {sorted(first)}")
    wanted: dict[str, pl.DataType] = {key: pl.String(), "title": pl.String()}
    for field in ("main_category", "main_cat"):
        if field in first:
            wanted[field] = pl.String()
    for field in ("categories", "category", "description", "features", "feature"):
        if field in first:
            wanted[field] = pl.List(pl.String()) if isinstance(first[field], list) else pl.String()
    raw = read_jsonl(path, "Amazon metadata", wanted).unique(key, keep="first", maintain_order=True)

    def as_text(col: str) -> pl.Expr:
        return pl.col(col).list.join(" ") if isinstance(wanted.get(col), pl.List) else pl.col(col)

    def first_of(col: str) -> pl.Expr:
        return pl.col(col).list.first() if isinstance(wanted.get(col), pl.List) else pl.col(col)

    cats = [pl.col(c) for c in ("main_category", "main_cat") if c in wanted]
    cats += [first_of(c) for c in ("categories", "category") if c in wanted]
    category = pl.coalesce([pl.when(c.str.strip_chars() != "").then(c) for c in cats]).fill_null("") if cats else pl.lit("")
    texts = [as_text(c) for c in ("description", "features", "feature") if c in wanted]
    text = pl.concat_str(texts, separator=" ", ignore_nulls=True).fill_null("") if texts else pl.lit("")
    title = pl.col("title").fill_null("").str.strip_chars()
    return raw.select(
        item_id=pl.col(key),
        title=pl.when(title != "").then(title).otherwise("product " + pl.col(key)),
        text=text.str.slice(0, 2000),
        category=category,
    )


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert cfg.events_path is not None  # load_source checks it (events_what below)
    return load_amazon(cfg.events_path, cfg.items_path, cfg.dislike_max_rating, cfg.like_min_rating, log)


SOURCE = Source("amazon", _load, events_what="reviews JSON-lines file")
