"""The polars engine: in memory for logs that fit, out of core (streaming) for logs that do not.

Out of core works because every step but two is per user: ordering, train/eval points, history
truncation, future-window labels and dropping exact duplicate events (duplicates share their user)
only ever look at one user's events. The two global steps are the validation rules, one streaming
query over the raw events first (duplicates change none of their facts), and the time cut-offs (two
quantiles of ``ts``), which must see the deduplicated events. So users are cut into contiguous
ranges (in ``user_id`` order) of about ``partition_events`` events each and one streaming pass
writes each range to its own Parquet partition; a first pass over the partitions sorts each, drops
its exact duplicates (the first by input row kept, as the loaders do) and writes it back; one
streaming query over those files (``ts`` only) gives the cut-offs; a second pass labels each
partition in memory by exactly the same code as the in-memory path (:mod:`conrec.data.splits`).
Because the ranges follow ``user_id`` order, writing the partitions' events one after the other
*is* the global (user, ts, input row) order, and the samples, written split by split and partition
by partition, are in the global (split, user, ts) order with the same ``sample_id`` as the
in-memory path. Peak memory is one partition's, whatever the log's size: no step holds a hash
table over the whole log's rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from conrec.data.config import DataConfig
from conrec.data.engine.base import EVENTS_FILE, SAMPLES_FILE, BuildResult, EventsInput, Step, quiet_step
from conrec.data.engine.scan import check_event_rules, estimated_rows, neutral_kind, scan_table
from conrec.data.repair import RepairLog
from conrec.data.schema import EVENT_COLUMNS
from conrec.data.splits import (
    SAMPLE_SCHEMA,
    SPLITS,
    attach_history_and_labels,
    cutoff_exprs,
    cutoffs_from,
    order_events,
    select_points,
    time_cutoffs,
)
from conrec.data.stats import EventParts, SampleParts, event_parts, sample_parts
from conrec.io import atomic_path, write_parquet

_ROW = "_row"  # input row number: the tie-break of equal (user, ts), carried through the partitions


class PolarsEngine:
    """``data.engine: polars`` (the default)."""

    name = "polars"

    def reads_file(self, cfg: DataConfig) -> bool:
        """Stream the ``table`` source's file (instead of loading it) when ``streaming`` says so."""
        if cfg.source != "table" or cfg.streaming == "off" or cfg.events_path is None:
            return False
        if cfg.streaming == "on":
            return True
        rows = estimated_rows(Path(cfg.events_path))
        return rows is not None and rows >= cfg.streaming_min_events

    def build(self, events: EventsInput, items: pl.DataFrame, cfg: DataConfig, out: Path, step: Step = quiet_step,
              log_dir: Path | None = None) -> BuildResult:
        """(:class:`DataEngine`) ``step`` and ``log_dir`` go unused: its parts are not told apart, nor logged."""
        if events.frame is not None and cfg.streaming != "on":
            return build_in_memory(events.frame, cfg, out)
        if events.frame is not None:  # a loader's table: validated, and deduplicated where the loader does so
            return build_streaming(events.frame.lazy(), items, cfg, out)
        return build_streaming(scan_table(cfg, keep_neutral=True), items, cfg, out, raw=True)


def build_in_memory(events: pl.DataFrame, cfg: DataConfig, out: Path) -> BuildResult:
    """The whole log at once (validated events, as the loaders return them)."""
    ordered = order_events(events)
    cuts = time_cutoffs(events, cfg.split)
    samples = attach_history_and_labels(ordered, select_points(ordered, cuts, cfg.split), cfg.split)
    write_parquet(events, out / EVENTS_FILE)
    write_parquet(samples, out / SAMPLES_FILE)
    return BuildResult(cuts, event_parts(events), sample_parts(samples), int(events["item_id"].n_unique()))


def build_streaming(events: pl.LazyFrame, items: pl.DataFrame, cfg: DataConfig, out: Path, raw: bool = False) -> BuildResult:
    """Out of core (module docstring): memory bounded by ``cfg.partition_events`` events.

    ``raw``: ``events`` is the ``table`` file as scanned, so it may hold invalid rows and exact
    duplicate events. Under ``data.on_invalid: drop`` both are dropped (a duplicate's first row by
    input row kept) before the cut-offs and labels and counted into :attr:`BuildResult.dropped`;
    under ``error`` the first stops the stage before anything is published.
    """
    checked = check_event_rules(events, items, f"{cfg.source} events", cfg.on_invalid if raw else "error", cfg.ts_unit if raw else None,
                                neutral_kind(cfg) if raw else "neutral_rating")
    items_with_events = checked.items_with_events
    events = checked.events.with_columns(pl.col("feedback").cast(pl.Int8)).with_row_index(_ROW)
    ranges = user_ranges(events, cfg.partition_events)
    work = out / "_partitions"
    shutil.rmtree(work, ignore_errors=True)
    try:
        events.join(ranges.lazy(), on="user_id", how="inner").sink_parquet(
            pl.PartitionBy(work / "events", key="part", include_key=False), mkdir=True, engine="streaming"
        )
        n_parts = int(ranges["part"][-1]) + 1 if ranges.height else 0
        # pass 1: each partition in the canonical order, its exact duplicates dropped, written back
        duplicates = 0
        dup_examples: list[dict[str, object]] = []
        parts: list[Path] = []
        for k in range(n_parts):
            part = _read_partition(work / "events" / f"part={k}")
            if part is None:
                continue
            if raw:  # sorted by (user, ts, input row): "first" is the first input row, as the loaders keep
                unique = part.unique(subset=list(EVENT_COLUMNS), keep="first", maintain_order=True)
                duplicates += part.height - unique.height
                if cfg.on_invalid == "error" and len(dup_examples) < 5 and unique.height < part.height:  # only error shows them, as the in-memory reader
                    repeated = part.filter(part.select(list(EVENT_COLUMNS)).is_duplicated()).unique(subset=list(EVENT_COLUMNS), keep="first", maintain_order=True)
                    dup_examples += repeated.select("user_id", "item_id", "ts").head(5 - len(dup_examples)).to_dicts()
                if cfg.on_invalid == "drop":
                    part = unique
            parts.append(work / f"events-{k}.parquet")
            part.write_parquet(parts[-1])
            shutil.rmtree(work / "events" / f"part={k}")
        assert parts  # check_event_rules refused an empty log
        if cfg.on_invalid == "error":  # stop before labelling, with the line the stage's record would raise
            RepairLog("error").record("duplicate_event", duplicates, f"{cfg.source} events", dup_examples)
        # the cut-offs on the deduplicated events, as the in-memory path computes them (reads only ts)
        valid, test = pl.scan_parquet(parts).select(cutoff_exprs(cfg.split)).collect(engine="streaming").row(0)
        cuts = cutoffs_from(valid, test)
        # pass 2: label each partition with the global cut-offs
        ev_parts: EventParts | None = None
        smp_parts = SampleParts()
        samples_files: list[Path] = []
        with parquet_appender(out / EVENTS_FILE) as write_events:
            for path in parts:
                part = pl.read_parquet(path)
                ordered = order_events(part)
                samples = attach_history_and_labels(ordered, select_points(ordered, cuts, cfg.split), cfg.split)
                write_events(part)
                samples_files.append(path.with_name(f"samples-{len(samples_files)}.parquet"))
                samples.write_parquet(samples_files[-1])
                ev_parts = event_parts(part) if ev_parts is None else ev_parts.merge(event_parts(part))
                smp_parts = smp_parts.merge(sample_parts(samples))
        _concat_samples(samples_files, out / SAMPLES_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert ev_parts is not None
    return BuildResult(cuts, ev_parts, smp_parts, items_with_events, dropped={**checked.dropped, "duplicate_event": duplicates},
                       details=checked.details)


def user_ranges(events: pl.LazyFrame, partition_events: int) -> pl.DataFrame:
    """``user_id -> part``: contiguous ranges of users in ``user_id`` order, about
    ``partition_events`` events each (one heavy user is never split: a partition holds whole users)."""
    sizes = events.group_by("user_id").agg(n=pl.len()).collect(engine="streaming").sort("user_id")
    return sizes.select("user_id", part=((pl.col("n").cum_sum() - pl.col("n")) // partition_events).cast(pl.Int64))


def _read_partition(directory: Path) -> pl.DataFrame | None:
    """One partition's events in the canonical (user, ts, input row) order, without the row column."""
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return None
    return pl.read_parquet(files).sort(["user_id", "ts", _ROW]).drop(_ROW)


def _concat_samples(files: list[Path], path: Path) -> None:
    """Partition samples -> one table in (split, user, ts) order with global ``sample_id``s."""
    present = [f for f in files if f.exists()]
    with parquet_appender(path) as write:
        offset = 0
        for split in SPLITS:
            for f in present:
                chunk = pl.read_parquet(f).filter(pl.col("split") == split)
                if chunk.height:
                    write(chunk.with_columns(sample_id=pl.int_range(offset, offset + chunk.height, dtype=pl.Int64)))
                    offset += chunk.height
        if offset == 0:  # no sample at all: still a readable table with the samples schema
            write(pl.DataFrame(schema=SAMPLE_SCHEMA))


@contextmanager
def parquet_appender(path: Path) -> Iterator[Callable[[pl.DataFrame], None]]:
    """Append polars frames to one Parquet file, one row group (or more) per frame; the file
    appears (atomically) only when the block exits without error, so no half-written file is left."""
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None

        def write(frame: pl.DataFrame) -> None:
            nonlocal writer
            table: pa.Table = frame.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)

        try:
            yield write
        finally:
            if writer is not None:
                writer.close()
