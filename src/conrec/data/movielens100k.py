"""The embedded default dataset, MovieLens-100K: see :mod:`conrec.data.sources.movielens100k`.

Kept as a module of its own name because the docs, benchmarks and callers import it from here.
"""

from __future__ import annotations

from conrec.data.sources.movielens100k import (
    INSTALL_HINT,
    load_movielens100k,
    locate_ml100k,
    read_atomic,
)

__all__ = ["INSTALL_HINT", "load_movielens100k", "locate_ml100k", "read_atomic"]
