"""The data-engine seam: what every engine receives, writes and returns.

Why a seam: the split and labelling semantics are defined once (:mod:`conrec.data.splits`, the
per-partition reference) and executed by whichever engine fits the log: polars in memory, polars
out of core (streaming over user partitions), or Spark on a cluster. The stage
(:mod:`conrec.data.stage`) loads, checks and publishes; an engine only turns events into the two
big files and the parts of the statistics, so the run-directory contract cannot differ by engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.splits import Cutoffs
from conrec.data.stats import EventParts, SampleParts

EVENTS_FILE = "events.parquet"
SAMPLES_FILE = "samples.parquet"

Step = Callable[[str], None]
"""Told what an engine starts doing now (``"finding the split cut-offs"``): the stage's progress line shows it."""


def quiet_step(what: str) -> None:
    """A :data:`Step` that shows nothing (an engine called outside the stage)."""


@dataclass(frozen=True)
class EventsInput:
    """The events an engine reads: a validated in-memory table (what every loader returns), or the
    ``table`` source's file, which the engine reads itself so that it never has to fit in memory."""

    frame: pl.DataFrame | None = None
    table: Path | None = None

    def __post_init__(self) -> None:
        if (self.frame is None) == (self.table is None):
            raise ValueError("EventsInput needs exactly one of frame and table")


@dataclass(frozen=True)
class BuildResult:
    """What an engine reports beside the files it wrote: the inputs of :func:`conrec.data.stats.data_stats`."""

    cuts: Cutoffs
    events: EventParts
    samples: SampleParts
    items_with_events: int
    # invalid rows (kinds of conrec.data.repair.WARTS, exact duplicates included) the engine dropped from a
    # file it read itself, which the stage records; an engine that reads a loader's table finds none
    dropped: dict[str, int] = field(default_factory=dict)
    # what the warning says of a kind dropped, beside its count (RepairLog.details: the '.0' hint on unknown items)
    details: dict[str, str] = field(default_factory=dict)


class DataEngine(Protocol):
    """Writes ``out/events.parquet`` (validated events, sorted by user, ts, input row) and
    ``out/samples.parquet`` (:mod:`conrec.data.samples`) and returns the statistics' parts.

    ``out`` is a staging directory: the stage publishes the files only after its checks pass.
    """

    name: str

    def reads_file(self, cfg: DataConfig) -> bool:
        """Whether this engine reads the ``table`` source's events file itself (:attr:`EventsInput.table`)
        rather than the loader's in-memory table."""
        ...

    def build(self, events: EventsInput, items: pl.DataFrame, cfg: DataConfig, out: Path, step: Step = quiet_step,
              log_dir: Path | None = None) -> BuildResult:
        """``step``: told each part of the work as it starts, where one takes long (Spark's jobs); ``log_dir``: where
        the engine may keep a log of its own that outlives ``out`` (Spark's JVM output, which errors point to)."""
        ...
