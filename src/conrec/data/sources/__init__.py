"""Data sources: one module per ``data.source`` value, each exporting a :class:`Source`.

Why a registry: :func:`load_source` looks the configured name up instead of walking an if-chain,
so adding a source is a new module here plus its name in this list (and in
:class:`conrec.data.config.DataConfig`'s ``source`` literal, which a test keeps in step).
Every loader returns tables validated by :mod:`conrec.data.schema`.
"""

from __future__ import annotations

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.sources import (
    amazon,
    kuairand,
    movielens,
    movielens100k,
    simulator,
    table,
)
from conrec.data.sources.base import Source
from conrec.errors import ConfigError

SOURCES: dict[str, Source] = {
    m.SOURCE.name: m.SOURCE for m in (movielens100k, simulator, table, movielens, kuairand, amazon)
}


def load_source(cfg: DataConfig, log: RepairLog | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Load ``cfg.source`` into validated canonical tables (the simulator's ground truth is dropped;
    call :func:`conrec.data.simulator.simulate` directly to keep it).

    Bad rows are handled by ``cfg.on_invalid`` and counted in ``log`` (pass one to read the
    counts; see :mod:`conrec.data.repair`)."""
    log = log if log is not None else RepairLog(cfg.on_invalid)
    source = SOURCES.get(cfg.source)
    if source is None:  # pragma: no cover - pydantic checks the literal
        raise ConfigError(f"unknown data.source {cfg.source!r}; choose one of {', '.join(SOURCES)}")
    if source.events_what is not None and cfg.events_path is None:
        raise ConfigError(f"data.events_path is required for data.source={cfg.source!r} (the {source.events_what})")
    return source.load(cfg, log)


__all__ = ["SOURCES", "Source", "load_source"]
