"""Loaders: turn each supported source into validated canonical ``(events, items)`` tables.

Every loader ends with :func:`conrec.data.schema.validate_items` / ``validate_events`` so whatever
the source, later stages see the same columns and dtypes (see :mod:`conrec.data.schema`). Ratings
are mapped to feedback with two thresholds: ``rating <= dislike_max_rating`` is an explicit dislike,
``rating >= like_min_rating`` a positive, anything between is neutral and dropped (a lukewarm 3
stars is neither, and absence of a positive is not a dislike).

Errors are :class:`DataValidationError` naming the file, column, line or item at fault.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path
from typing import Literal, Sequence

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.schema import DISLIKE, EVENT_COLUMNS, ITEM_COLUMNS, POSITIVE, validate_events, validate_items
from conrec.errors import ConfigError, DataValidationError, require_columns

TsUnit = Literal["auto", "s", "ms"]
_MS_THRESHOLD = 10**11  # epoch seconds reach 1e11 only in the year 5138: larger integers are milliseconds

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


# --------------------------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------------------------


def _suffix(path: Path) -> str:
    """Format suffix, looking through a trailing ``.gz``."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"{what} file not found: {p.absolute()}")
    if p.is_dir():
        raise DataValidationError(f"{what} path {p} is a directory; expected a file")
    return p


def _read_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()


def read_table_file(path: str | Path, what: str, schema_overrides: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """Read a CSV/TSV or Parquet file (chosen by suffix) with a clear error for missing/corrupt files."""
    p = _existing(path, what)
    fmt = _suffix(p)
    try:
        if fmt in _PARQUET_SUFFIXES:
            return pl.read_parquet(p)
        if fmt in _CSV_SUFFIXES:
            return pl.read_csv(
                io.BytesIO(_read_bytes(p)),
                separator="\t" if fmt == ".tsv" else ",",
                schema_overrides=schema_overrides,
                infer_schema_length=10_000,
            )
    except Exception as exc:  # polars/arrow raise many types for malformed files
        raise DataValidationError(f"{what} file {p} could not be read as {fmt.lstrip('.')}: {_first_line(exc)}") from exc
    raise DataValidationError(
        f"{what} file {p}: unsupported format {fmt!r}; use .csv, .tsv or .parquet (optionally .gz for text)"
    )


def _read_jsonl(path: Path, what: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read only the ``schema`` fields of a JSON-lines file (other fields, however nested, are skipped)."""
    try:
        return pl.read_ndjson(io.BytesIO(_read_bytes(path)), schema=schema)
    except Exception as exc:
        raise DataValidationError(f"{what} file {path} is not valid JSON lines: {_first_line(exc)}") from exc


def _first_json_record(path: Path, what: str) -> dict:
    """The first record of a JSON-lines file, to tell dataset versions apart by their keys."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    rec = json.loads(line)
                    if not isinstance(rec, dict):
                        raise DataValidationError(f"{what} file {path}, line {lineno}: expected a JSON object")
                    return rec
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataValidationError(f"{what} file {path} is not valid JSON lines: {exc}") from exc
    raise DataValidationError(f"{what} file {path} is empty")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def parse_timestamps(s: pl.Series, unit: TsUnit = "auto", what: str = "events", column: str = "ts") -> pl.Series:
    """Any timestamp column -> Int64 epoch seconds.

    Integers are seconds, or milliseconds (``unit="ms"``, or ``"auto"`` when every value exceeds
    1e11); strings may be integers or ISO-like date/times; datetimes/dates are converted (UTC).
    """
    name = s.name
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("us"))
    if s.dtype.is_temporal():
        return s.cast(pl.Datetime("us")).dt.epoch("s").alias(name)
    if s.dtype == pl.String:
        as_int = s.str.strip_chars().cast(pl.Int64, strict=False)
        if as_int.null_count() == s.null_count():
            s = as_int
        else:
            as_dt = _parse_datetimes(s.str.strip_chars())
            bad = s.is_not_null() & as_dt.is_null()
            if bad.any() and not (bad & as_int.is_null()).any():
                raise DataValidationError(f"{what}: column {column!r} mixes epoch integers and date/time strings")
            bad = bad & as_int.is_null()
            if bad.any():
                row = int(bad.arg_true()[0])
                raise DataValidationError(
                    f"{what}: column {column!r} has a value that is neither epoch seconds nor a date/time: "
                    f"{s[row]!r} (row {row + 1})"
                )
            return as_dt.dt.epoch("s").alias(name)
    if s.dtype.is_float():
        frac = s.is_not_null() & (s != s.floor())
        if frac.any() and unit != "ms":
            row = int(frac.arg_true()[0])
            raise DataValidationError(f"{what}: column {column!r} has a fractional timestamp {s[row]} (row {row + 1})")
        s = s.floor().cast(pl.Int64)
    if not s.dtype.is_integer():
        raise DataValidationError(f"{what}: column {column!r} must hold timestamps, got dtype {s.dtype}")
    s = s.cast(pl.Int64)
    if unit == "ms" or (unit == "auto" and s.len() > 0 and (s.drop_nulls() > _MS_THRESHOLD).all()):
        s = s // 1000
    return s.alias(name)


_DATETIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _parse_datetimes(s: pl.Series) -> pl.Series:
    """Strings -> datetimes (nulls where unparseable): polars' format inference first, then the common
    ISO layouts one by one (inference gives up entirely when the first value is bad)."""
    try:
        return s.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.ComputeError:
        pass
    best = pl.Series(s.name, [None] * s.len(), dtype=pl.Datetime("us"))
    for fmt in _DATETIME_FORMATS:
        parsed = s.str.to_datetime(fmt, strict=False, time_unit="us")
        if parsed.null_count() < best.null_count():
            best = parsed
    return best


def ratings_to_feedback(df: pl.DataFrame, dislike_max_rating: float, like_min_rating: float, what: str) -> pl.DataFrame:
    """Replace ``rating`` by ``feedback``: <= dislike_max -> -1, >= like_min -> +1, between -> dropped."""
    if dislike_max_rating >= like_min_rating:
        raise ConfigError("dislike_max_rating must be < like_min_rating (a rating cannot be both)")
    r = df["rating"]
    if r.dtype == pl.String:
        r_num = r.str.strip_chars().cast(pl.Float64, strict=False)
        bad = r.is_not_null() & r_num.is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise DataValidationError(f"{what}: column 'rating' has a non-numeric value {r[row]!r} (row {row + 1})")
        r = r_num
    if not r.dtype.is_numeric():
        raise DataValidationError(f"{what}: column 'rating' must be numeric, got dtype {r.dtype}")
    if r.null_count():
        raise DataValidationError(f"{what}: column 'rating' has {r.null_count()} missing value(s)")
    fb = (
        pl.when(pl.col("rating") <= dislike_max_rating)
        .then(pl.lit(DISLIKE, pl.Int8))
        .when(pl.col("rating") >= like_min_rating)
        .then(pl.lit(POSITIVE, pl.Int8))
        .otherwise(None)
    )
    return (
        df.with_columns(rating=r.cast(pl.Float64))
        .with_columns(feedback=fb)
        .filter(pl.col("feedback").is_not_null())
        .drop("rating")
    )


def _finish(events: pl.DataFrame, items: pl.DataFrame, source: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validate items, then events against them; keep only canonical event columns."""
    items = validate_items(items, source=f"{source} items")
    events = validate_events(events.select(list(EVENT_COLUMNS)), items, source=f"{source} events")
    return events, items


def _placeholder_items(item_ids: pl.Series, prefix: str) -> pl.DataFrame:
    """Items for sources without metadata: the id is all we know, so it becomes the title."""
    ids = item_ids.cast(pl.String).unique(maintain_order=True).alias("item_id")
    return ids.to_frame().with_columns(
        title=pl.lit(prefix + " ") + pl.col("item_id"), text=pl.lit(""), category=pl.lit("")
    )


# --------------------------------------------------------------------------------------------
# generic table
# --------------------------------------------------------------------------------------------


def load_table(
    events_path: str | Path,
    items_path: str | Path | None,
    columns: dict[str, str] | None = None,
    dislike_max_rating: float = 2.0,
    like_min_rating: float = 4.0,
    ts_unit: TsUnit = "auto",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Events (and optionally items) from CSV/TSV/Parquet, with a source -> canonical column mapping.

    ``columns`` renames source columns in both files, e.g. ``{"uid": "user_id", "stars": "rating"}``.
    Events need ``user_id``, ``item_id``, ``ts`` and either ``feedback`` (-1/+1; 0 = neutral, dropped)
    or ``rating`` (converted with the thresholds). Without ``items_path`` each item's title is
    ``"item <id>"`` (then item text carries no meaning: prefer giving items).
    """
    columns = dict(columns or {})
    bad_targets = sorted(set(columns.values()) - set(EVENT_COLUMNS) - set(ITEM_COLUMNS) - {"rating"})
    if bad_targets:
        raise ConfigError(
            f"columns: unknown canonical column(s) {bad_targets}; "
            f"targets are {sorted(set(EVENT_COLUMNS) | set(ITEM_COLUMNS) | {'rating'})}"
        )
    ev_path = _existing(events_path, "events")
    # Ids are read as strings so that "007" stays "007" (CSV type inference would make it 7).
    id_sources = {"user_id", "item_id"} | {src for src, dst in columns.items() if dst in ("user_id", "item_id")}
    as_strings: dict[str, pl.DataType] = {c: pl.String() for c in id_sources}
    events = read_table_file(ev_path, "events", schema_overrides=as_strings)
    items_raw = read_table_file(items_path, "items", schema_overrides=as_strings) if items_path is not None else None
    present = set(events.columns) | set(items_raw.columns if items_raw is not None else [])
    unknown_sources = sorted(set(columns) - present)
    if unknown_sources:
        raise ConfigError(f"columns: source column(s) {unknown_sources} are in neither the events nor the items file")

    what = f"events file {ev_path}"
    events = events.rename({k: v for k, v in columns.items() if k in events.columns})
    require_columns(events, ("user_id", "item_id", "ts"), what)
    if "feedback" not in events.columns and "rating" not in events.columns:
        raise DataValidationError(
            f"{what}: needs a 'feedback' (-1/+1) or a 'rating' column (map one with `columns`); have {events.columns}"
        )
    for col in ("user_id", "item_id", "ts"):
        n_null = events[col].null_count()
        if n_null:
            raise DataValidationError(f"{what}: column {col!r} has {n_null} missing value(s)")
    events = events.with_columns(parse_timestamps(events["ts"], ts_unit, what), pl.col("user_id", "item_id").cast(pl.String))
    if "feedback" in events.columns:
        fb = events["feedback"]
        if fb.dtype == pl.Boolean:
            raise DataValidationError(f"{what}: column 'feedback' must be -1 (dislike), 0 (neutral) or +1, got booleans")
        if fb.dtype == pl.String:
            fb_num = fb.str.strip_chars().cast(pl.Int64, strict=False)
            if fb_num.null_count() > fb.null_count():
                bad = fb.filter(fb.is_not_null() & fb_num.is_null())
                raise DataValidationError(f"{what}: column 'feedback' has non-numeric value(s) {bad.unique().head(3).to_list()}")
            events = events.with_columns(feedback=fb_num)
        events = events.filter(pl.col("feedback") != 0)
    else:
        events = ratings_to_feedback(events, dislike_max_rating, like_min_rating, what)

    if items_raw is not None:
        items = items_raw.rename({k: v for k, v in columns.items() if k in items_raw.columns})
        require_columns(items, ("item_id", "title"), f"items file {items_path}")
    else:
        items = _placeholder_items(events["item_id"], "item")
    return _finish(events, items, source=f"table {ev_path.name}")


# --------------------------------------------------------------------------------------------
# MovieLens (ML-1M .dat and ML-latest .csv); the ML-100K default lives in movielens100k.py
# --------------------------------------------------------------------------------------------

_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_NO_GENRES = {"(no genres listed)", ""}


def movie_items(item_ids: pl.Series, titles: pl.Series, genres: pl.Series, years: pl.Series | None = None) -> pl.DataFrame:
    """Canonical movie items: title (with year), category = first genre, text = all genres + year.

    ``genres`` is a list column; ``years`` (strings) is used when the title does not end with
    ``(YYYY)``, and a non-numeric year (ML-100K has one) is left out rather than guessed.
    """
    title = titles.cast(pl.String).fill_null("").str.strip_chars()
    df = pl.DataFrame({"item_id": item_ids.cast(pl.String), "title": title, "genres": genres})
    df = df.with_columns(
        pl.col("genres").list.eval(pl.element().str.strip_chars()).list.eval(pl.element().filter(~pl.element().is_in(list(_NO_GENRES))))
    )
    year_in_title = pl.col("title").str.extract(_YEAR_IN_TITLE.pattern, 1)
    if years is not None:
        df = df.with_columns(given_year=years.cast(pl.String).str.strip_chars())
        valid_given = pl.when(pl.col("given_year").str.contains(r"^\d{4}$")).then(pl.col("given_year"))
        df = df.with_columns(year=pl.coalesce(year_in_title, valid_given)).with_columns(
            title=pl.when(year_in_title.is_null() & pl.col("year").is_not_null())
            .then(pl.col("title") + " (" + pl.col("year") + ")")
            .otherwise(pl.col("title"))
        )
    else:
        df = df.with_columns(year=year_in_title)
    genre_text = pl.when(pl.col("genres").list.len() > 0).then(
        "Genres: " + pl.col("genres").list.join(", ") + "."
    ).otherwise(pl.lit("Genres: unknown."))
    year_text = pl.when(pl.col("year").is_not_null()).then(" Released " + pl.col("year") + ".").otherwise(pl.lit(""))
    return df.select(
        "item_id",
        "title",
        text=genre_text + year_text,
        category=pl.col("genres").list.first().fill_null("unknown"),
        genres=pl.col("genres").list.join("|"),
    )


def _read_double_colon(path: Path, n_fields: int, names: Sequence[str], what: str) -> pl.DataFrame:
    """ML-1M ``::``-separated latin-1 files; the last field keeps any further ``::`` (titles)."""
    try:
        text = _read_bytes(path).decode("latin-1")
    except OSError as exc:
        raise DataValidationError(f"{what} file {path} could not be read: {exc}") from exc
    lines = pl.DataFrame({"line": text.splitlines()}).with_row_index("lineno", offset=1)
    lines = lines.filter(pl.col("line").str.strip_chars() != "")
    parts = lines["line"].str.splitn("::", n_fields).struct.unnest()
    parts.columns = list(names)
    short = parts[names[-1]].is_null()
    if short.any():
        row = int(short.arg_true()[0])
        raise DataValidationError(
            f"{what} file {path}, line {lines['lineno'][row]}: expected {n_fields} '::'-separated fields, "
            f"got {lines['line'][row]!r}"
        )
    return parts


def load_movielens(
    ratings_path: str | Path,
    movies_path: str | Path,
    dislike_max_rating: float = 2.0,
    like_min_rating: float = 4.0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """MovieLens: ``ratings.dat``/``movies.dat`` (ML-1M, ``::``, latin-1) or ``ratings.csv``/``movies.csv``
    (ML-latest/ML-25M, headers ``userId,movieId,rating,timestamp`` and ``movieId,title,genres``)."""
    rp, mp = _existing(ratings_path, "MovieLens ratings"), _existing(movies_path, "MovieLens movies")
    if _suffix(rp) == ".dat":
        ratings = _read_double_colon(rp, 4, ["user_id", "item_id", "rating", "ts"], "MovieLens ratings")
        movies = _read_double_colon(mp, 3, ["item_id", "title", "genres"], "MovieLens movies")
    elif _suffix(rp) == ".csv":
        ratings = read_table_file(rp, "MovieLens ratings", schema_overrides={"userId": pl.String, "movieId": pl.String})
        movies = read_table_file(mp, "MovieLens movies", schema_overrides={"movieId": pl.String})
        require_columns(ratings, ("userId", "movieId", "rating", "timestamp"), f"MovieLens ratings file {rp}")
        require_columns(movies, ("movieId", "title", "genres"), f"MovieLens movies file {mp}")
        ratings = ratings.rename({"userId": "user_id", "movieId": "item_id", "timestamp": "ts"})
        movies = movies.rename({"movieId": "item_id"})
    else:
        raise DataValidationError(f"MovieLens ratings file {rp}: expected ratings.dat (ML-1M) or ratings.csv (ML-latest)")
    what = f"MovieLens ratings file {rp}"
    ratings = ratings.with_columns(parse_timestamps(ratings["ts"], "s", what), pl.col("user_id", "item_id").cast(pl.String))
    events = ratings_to_feedback(ratings, dislike_max_rating, like_min_rating, what)
    items = movie_items(movies["item_id"], movies["title"], movies["genres"].cast(pl.String).str.split("|"))
    return _finish(events, items, source=f"MovieLens {rp.name}")


# --------------------------------------------------------------------------------------------
# KuaiRand
# --------------------------------------------------------------------------------------------

_KUAI_POSITIVE = ("is_click", "is_like", "long_view")


def kuairand_log_files(path: str | Path) -> list[Path]:
    """A log file, or every ``log*.csv`` in a directory (KuaiRand ships several log files)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("log*.csv"))
        if not files:
            raise DataValidationError(f"KuaiRand log directory {p} has no log*.csv files")
        return files
    return [_existing(p, "KuaiRand log")]


def load_kuairand(
    log_path: str | Path | Sequence[str | Path], video_features_path: str | Path | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """KuaiRand logs: ``is_hate = 1`` is a dislike; otherwise a click, like or long view is a positive;
    other impressions are dropped. Time from ``time_ms`` (epoch ms), else ``date`` (YYYYMMDD) +
    ``hourmin`` (HHMM). Items from the video features file when given, else ``"video <id>"``."""
    paths = [Path(p) for p in log_path] if isinstance(log_path, (list, tuple)) else kuairand_log_files(log_path)
    frames = []
    for path in paths:
        _existing(path, "KuaiRand log")
        what = f"KuaiRand log {path}"
        try:
            header = pl.read_csv(path, n_rows=0).columns
        except Exception as exc:
            raise DataValidationError(f"{what} could not be read as CSV: {_first_line(exc)}") from exc
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
            raise DataValidationError(f"{what} could not be read as CSV: {_first_line(exc)}") from exc
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
        items = _placeholder_items(events["item_id"], "video")
    return _finish(events, items, source="KuaiRand")


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


# --------------------------------------------------------------------------------------------
# Amazon reviews (2018 and 2023 releases)
# --------------------------------------------------------------------------------------------


def load_amazon(
    reviews_jsonl: str | Path,
    meta_jsonl: str | Path | None = None,
    dislike_max_rating: float = 2.0,
    like_min_rating: float = 4.0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Amazon reviews JSONL (optionally .gz). 2018: ``reviewerID, asin, overall, unixReviewTime`` (s);
    2023: ``user_id, parent_asin|asin, rating, timestamp`` (ms). Items are keyed by ``parent_asin``
    when present (2023 metadata is keyed by it). Metadata: title, main category, categories,
    description. Duplicate metadata rows (the 2018 dumps have some) keep the first."""
    rp = _existing(reviews_jsonl, "Amazon reviews")
    what = f"Amazon reviews file {rp}"
    first = _first_json_record(rp, "Amazon reviews")
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
    raw = _read_jsonl(rp, "Amazon reviews", schema).rename(spec)  # type: ignore[arg-type]
    for col in ("user_id", "item_id", "ts", "rating"):
        n_null = raw[col].null_count()
        if n_null:
            src = next(k for k, v in spec.items() if v == col)
            raise DataValidationError(f"{what}: field {src!r} is missing in {n_null} record(s)")
    raw = raw.with_columns(parse_timestamps(raw["ts"], unit, what))
    events = ratings_to_feedback(raw, dislike_max_rating, like_min_rating, what)
    if meta_jsonl is not None:
        items = _amazon_items(_existing(meta_jsonl, "Amazon metadata"))
    else:
        items = _placeholder_items(events["item_id"], "product")
    return _finish(events, items, source="Amazon")


def _amazon_items(path: Path) -> pl.DataFrame:
    first = _first_json_record(path, "Amazon metadata")
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
    raw = _read_jsonl(path, "Amazon metadata", wanted).unique(key, keep="first", maintain_order=True)

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


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------


def load_source(cfg: DataConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Load ``cfg.source`` into validated canonical tables (the simulator's ground truth is dropped;
    call :func:`conrec.data.simulator.simulate` directly to keep it)."""
    if cfg.source == "movielens100k":
        from conrec.data.movielens100k import load_movielens100k

        return load_movielens100k(cfg.dislike_max_rating, cfg.like_min_rating)
    if cfg.source == "simulator":
        from conrec.data.simulator import simulate

        sim = simulate(cfg.simulator)
        return sim.events, sim.items
    if cfg.events_path is None:
        raise ConfigError(f"data.events_path is required for data.source={cfg.source!r} (the {_EVENTS_WHAT[cfg.source]})")
    if cfg.source == "table":
        return load_table(cfg.events_path, cfg.items_path, cfg.columns, cfg.dislike_max_rating, cfg.like_min_rating, cfg.ts_unit)
    if cfg.source == "movielens":
        if cfg.items_path is None:
            raise ConfigError("data.items_path is required for data.source='movielens' (movies.dat or movies.csv)")
        return load_movielens(cfg.events_path, cfg.items_path, cfg.dislike_max_rating, cfg.like_min_rating)
    if cfg.source == "kuairand":
        return load_kuairand(cfg.events_path, cfg.items_path)
    if cfg.source == "amazon":
        return load_amazon(cfg.events_path, cfg.items_path, cfg.dislike_max_rating, cfg.like_min_rating)
    raise ConfigError(f"unknown data.source {cfg.source!r}")  # pragma: no cover - pydantic checks the literal


_EVENTS_WHAT = {
    "table": "events CSV/Parquet file",
    "movielens": "ratings.dat or ratings.csv",
    "kuairand": "KuaiRand log CSV or a directory of log*.csv",
    "amazon": "reviews JSON-lines file",
}
