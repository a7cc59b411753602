"""Loaders: turn each supported source into validated canonical ``(events, items)`` tables.

Every loader ends with :func:`conrec.data.schema.validate_items` / ``validate_events`` so whatever
the source, later stages see the same columns and dtypes (see :mod:`conrec.data.schema`). Ratings
are mapped to feedback with two thresholds: ``rating <= dislike_max_rating`` is an explicit dislike,
``rating >= like_min_rating`` a positive, anything between is neutral and dropped (a lukewarm 3
stars is neither, and absence of a positive is not a dislike).

The sources themselves live in :mod:`conrec.data.sources` (one module each, found through its
registry); this module keeps the public names that callers and the docs use.

Errors are :class:`DataValidationError` naming the file, column, line or item at fault.
"""

from __future__ import annotations

from conrec.data.sources import SOURCES, load_source
from conrec.data.sources.amazon import load_amazon
from conrec.data.sources.common import (
    TsUnit,
    parse_timestamps,
    ratings_to_feedback,
    read_table_file,
)
from conrec.data.sources.kuairand import kuairand_log_files, load_kuairand
from conrec.data.sources.movielens import load_movielens, movie_items
from conrec.data.sources.table import load_table

__all__ = [
    "SOURCES",
    "TsUnit",
    "kuairand_log_files",
    "load_amazon",
    "load_kuairand",
    "load_movielens",
    "load_source",
    "load_table",
    "movie_items",
    "parse_timestamps",
    "ratings_to_feedback",
    "read_table_file",
]
