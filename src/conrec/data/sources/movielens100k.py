"""The embedded real default dataset: MovieLens-100K, read at run time from the installed ``recbole``.

Why this source: it is real explicit feedback with timestamps and genuine dislikes (ratings 1-2:
17,480 of 100,000 ratings, 915 of 943 users), it ships inside a PyPI package (so it works offline),
and its GroupLens licence forbids redistribution, so conrec never copies the files: they are read
from ``recbole/dataset_example/ml-100k`` where ``pip install --no-deps recbole==1.2.1`` put them.
recbole itself is never imported (its own dependencies are not wanted), only located.

Mapping: rating <= 2 dislike, >= 4 positive, 3 dropped (thresholds configurable). Items: title =
movie title with its release year, category = first genre, text = "Genres: ... . Released <year>.".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.sources.base import Source
from conrec.data.sources.common import (
    finish_tables,
    parse_timestamps,
    ratings_to_feedback,
)
from conrec.data.sources.movielens import movie_items
from conrec.errors import ConfigError, DataValidationError

INSTALL_HINT = "pip install --no-deps recbole==1.2.1"


def locate_ml100k() -> Path:
    """Directory holding ``ml-100k.inter`` / ``ml-100k.item`` inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "dataset_example" / "ml-100k"
        if (d / "ml-100k.inter").exists() and (d / "ml-100k.item").exists():
            return d
    where = f" (found recbole at {locations[0]}, but without dataset_example/ml-100k)" if locations else ""
    raise ConfigError(
        f"the default dataset MovieLens-100K is read from the recbole package, which is not installed{where}. "
        f"Install it with `{INSTALL_HINT}` (data only; no dependencies needed), or set data.source to another source."
    )


def read_atomic(path: Path, what: str) -> pl.DataFrame:
    """RecBole atomic files: tab-separated, header ``name:type``, no quoting, every column a string
    (item 1412 has year ``V``, so nothing may be parsed as a number on read)."""
    try:
        df = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
    except Exception as exc:
        raise DataValidationError(f"{what} {path} could not be read: {exc}") from exc
    return df.rename({c: c.split(":", 1)[0] for c in df.columns})


def load_movielens100k(dislike_max_rating: float = 2.0, like_min_rating: float = 4.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Canonical (events, items) for MovieLens-100K (100,000 ratings -> 17,480 dislikes with defaults)."""
    d = locate_ml100k()
    inter = read_atomic(d / "ml-100k.inter", "MovieLens-100K interactions")
    item = read_atomic(d / "ml-100k.item", "MovieLens-100K items")
    what = f"MovieLens-100K interactions {d / 'ml-100k.inter'}"
    events = inter.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("rating"),
        ts=parse_timestamps(inter["timestamp"].cast(pl.Float64), "s", what),
    )
    events = ratings_to_feedback(events, dislike_max_rating, like_min_rating, what)
    items = movie_items(
        item["item_id"],
        item["movie_title"],
        item["class"].fill_null("").str.split(" "),
        years=item["release_year"],
    )
    return finish_tables(events, items, source="MovieLens-100K")


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    # the bundled file is clean: strict, so that no repair can ever change the published figures
    return load_movielens100k(cfg.dislike_max_rating, cfg.like_min_rating)


SOURCE = Source("movielens100k", _load)
