"""What a data source is, for the registry in :mod:`conrec.data.sources`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog

Loader = Callable[[DataConfig, RepairLog], "tuple[pl.DataFrame, pl.DataFrame]"]


@dataclass(frozen=True)
class Source:
    """One ``data.source`` value: its name, its loader (``DataConfig`` and the :class:`RepairLog` that
    carries ``data.on_invalid`` and receives the counts -> validated canonical ``(events, items)``) and, for file-based sources, what ``data.events_path`` must point to.

    Why ``events_what`` is data, not code in each loader: the "events_path is required" error is
    the same for every file-based source and names the file each one expects.
    """

    name: str
    load: Loader
    events_what: str | None = None  # None: the source needs no events file
