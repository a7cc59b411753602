"""The polars engine: in memory for logs that fit, out of core (streaming) for logs that do not.

Out of core works because every step but two is per user: ordering, train/eval points, history
truncation and future-window labels only ever look at one user's events. The two global steps,
the validation rules and the time cut-offs (two quantiles of ``ts``), run first as one streaming
query. Then users are cut into contiguous ranges (in ``user_id`` order) of about
``partition_events`` events each; one streaming pass writes each range to its own Parquet
partition, and each partition is labelled in memory by exactly the same code as the in-memory path
(:mod:`conrec.data.splits`). Because the ranges follow ``user_id`` order, writing the partitions'
events one after the other *is* the global (user, ts, input row) order, and the samples, written
split by split and partition by partition, are in the global (split, user, ts) order with the same
``sample_id`` as the in-memory path. Peak memory is one partition's, whatever the log's size.
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
from conrec.data.engine.base import EVENTS_FILE, SAMPLES_FILE, BuildResult, EventsInput
from conrec.data.engine.scan import check_events, estimated_rows, scan_table
from conrec.data.splits import SAMPLE_SCHEMA, SPLITS, attach_history_and_labels, order_events, select_points, time_cutoffs
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

    def build(self, events: EventsInput, items: pl.DataFrame, cfg: DataConfig, out: Path) -> BuildResult:
        if events.frame is not None and cfg.streaming != "on":
            return build_in_memory(events.frame, cfg, out)
        lf = events.frame.lazy() if events.frame is not None else scan_table(cfg)
        return build_streaming(lf, items, cfg, out)


def build_in_memory(events: pl.DataFrame, cfg: DataConfig, out: Path) -> BuildResult:
    """The whole log at once (validated events, as the loaders return them)."""
    ordered = order_events(events)
    cuts = time_cutoffs(events, cfg.split)
    samples = attach_history_and_labels(ordered, select_points(ordered, cuts, cfg.split), cfg.split)
    write_parquet(events, out / EVENTS_FILE)
    write_parquet(samples, out / SAMPLES_FILE)
    return BuildResult(cuts, event_parts(events), sample_parts(samples), int(events["item_id"].n_unique()))


def build_streaming(events: pl.LazyFrame, items: pl.DataFrame, cfg: DataConfig, out: Path) -> BuildResult:
    """Out of core (module docstring): memory bounded by ``cfg.partition_events`` events."""
    facts = check_events(events, items, cfg.split, what=f"{cfg.source} events")
    events = events.with_columns(pl.col("feedback").cast(pl.Int8)).with_row_index(_ROW)
    ranges = user_ranges(events, cfg.partition_events)
    work = out / "_partitions"
    shutil.rmtree(work, ignore_errors=True)
    try:
        events.join(ranges.lazy(), on="user_id", how="inner").sink_parquet(
            pl.PartitionBy(work / "events", key="part", include_key=False), mkdir=True, engine="streaming"
        )
        n_parts = int(ranges["part"][-1]) + 1 if ranges.height else 0
        ev_parts: EventParts | None = None
        smp_parts = SampleParts()
        with parquet_appender(out / EVENTS_FILE) as write_events:
            for k in range(n_parts):
                part = _read_partition(work / "events" / f"part={k}")
                if part is None:
                    continue
                ordered = order_events(part)
                samples = attach_history_and_labels(ordered, select_points(ordered, facts.cuts, cfg.split), cfg.split)
                write_events(part)
                samples.write_parquet(work / f"samples-{k}.parquet")
                ev_parts = event_parts(part) if ev_parts is None else ev_parts.merge(event_parts(part))
                smp_parts = smp_parts.merge(sample_parts(samples))
        _concat_samples([work / f"samples-{k}.parquet" for k in range(n_parts)], out / SAMPLES_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert ev_parts is not None  # check_events refused an empty log
    return BuildResult(facts.cuts, ev_parts, smp_parts, facts.items_with_events)


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
