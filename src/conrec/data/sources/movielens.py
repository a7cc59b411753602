"""``data.source: movielens``: ML-1M ``.dat`` and ML-latest ``.csv`` releases (ratings + movies)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.sources.base import Source
from conrec.data.sources.common import (
    existing_file,
    file_suffix,
    finish_tables,
    parse_timestamps,
    ratings_to_feedback,
    read_bytes,
    read_table_file,
)
from conrec.errors import ConfigError, DataValidationError, require_columns

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
        text = read_bytes(path).decode("latin-1")
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
    log: RepairLog | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """MovieLens: ``ratings.dat``/``movies.dat`` (ML-1M, ``::``, latin-1) or ``ratings.csv``/``movies.csv``
    (ML-latest/ML-25M, headers ``userId,movieId,rating,timestamp`` and ``movieId,title,genres``).
    ``log``: the invalid-row policy and its counts (see :mod:`conrec.data.repair`; strict without it)."""
    rp, mp = existing_file(ratings_path, "MovieLens ratings"), existing_file(movies_path, "MovieLens movies")
    if file_suffix(rp) == ".dat":
        ratings = _read_double_colon(rp, 4, ["user_id", "item_id", "rating", "ts"], "MovieLens ratings")
        movies = _read_double_colon(mp, 3, ["item_id", "title", "genres"], "MovieLens movies")
    elif file_suffix(rp) == ".csv":
        ratings = read_table_file(rp, "MovieLens ratings", schema_overrides={"userId": pl.String(), "movieId": pl.String()})
        movies = read_table_file(mp, "MovieLens movies", schema_overrides={"movieId": pl.String()})
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
    return finish_tables(events, items, source=f"MovieLens {rp.name}", log=log)


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    assert cfg.events_path is not None  # load_source checks it (events_what below)
    if cfg.items_path is None:
        raise ConfigError("data.items_path is required for data.source='movielens' (movies.dat or movies.csv)")
    return load_movielens(cfg.events_path, cfg.items_path, cfg.dislike_max_rating, cfg.like_min_rating, log)


SOURCE = Source("movielens", _load, events_what="ratings.dat or ratings.csv")
