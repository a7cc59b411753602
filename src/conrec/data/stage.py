"""The ``data`` stage: load the configured source, split by time, label, write the run's data files.

Outputs (see :mod:`conrec.runs`): ``data/events.parquet``, ``data/items.parquet``,
``data/samples.parquet``, ``data/stats.json``; with ``source: simulator`` also
``data/user_facets.parquet`` (each user's true dislike facets: ``user_id, axis, value``), so later
stages can check models against the ground truth. ``data/exposures.parquet`` holds every shown
item with its outcome (see :mod:`conrec.data.exposures`), for the exposure-controlled evaluation. Every file is written atomically and the stage
marker last, so an interrupted run never looks finished.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

import polars as pl
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.samples import DAY
from conrec.data.schema import DISLIKE, validate_events, validate_items
from conrec.data.splits import (
    SPLITS,
    Cutoffs,
    attach_history_and_labels,
    order_events,
    select_points,
    time_cutoffs,
)
from conrec.errors import DataValidationError
from conrec.io import write_json, write_parquet
from conrec.progress import stage_progress
from conrec.runs import RunDir


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def data_stats(events: pl.DataFrame, items: pl.DataFrame, samples: pl.DataFrame, cuts: Cutoffs, source: str) -> dict[str, Any]:
    """Summary numbers written to stats.json (and quoted in the report)."""
    n_dis = int((events["feedback"] == DISLIKE).sum())
    per_user = (
        events.group_by("user_id").agg(neg=(pl.col("feedback") == DISLIKE).sum()).get_column("neg")
        if events.height
        else pl.Series("neg", [], pl.UInt32)
    )
    by_split = {s: int((samples["split"] == s).sum()) for s in SPLITS}
    future = samples.group_by("split").agg(pl.col("future_negs").list.len().mean()).rows()
    return {
        "source": source,
        "users": int(events["user_id"].n_unique()),
        "items": int(items.height),
        "items_with_events": int(events["item_id"].n_unique()),
        "events": int(events.height),
        "dislikes": n_dis,
        "positives": int(events.height - n_dis),
        "dislike_share": n_dis / events.height if events.height else 0.0,
        "users_with_dislikes": int((per_user > 0).sum()),
        "median_negatives_per_user": float(cast(float, per_user.median()) or 0.0),
        "median_negatives_per_user_with_any": float(cast(float, per_user.filter(per_user > 0).median()) or 0.0),
        "first_event": _iso(int(events["ts"].min())),  # type: ignore[arg-type]
        "last_event": _iso(int(events["ts"].max())),  # type: ignore[arg-type]
        "valid_cutoff": _iso(cuts.valid),
        "test_cutoff": _iso(cuts.test),
        "valid_cutoff_ts": cuts.valid,
        "test_cutoff_ts": cuts.test,
        "days_covered": round((int(events["ts"].max()) - int(events["ts"].min())) / DAY, 2),  # type: ignore[arg-type]
        "samples": by_split,
        "mean_history_length": float(cast(float, samples["hist_items"].list.len().mean()) or 0.0) if samples.height else 0.0,
        "mean_future_negs": {s: float(v) for s, v in future},
    }


def check_learnable(stats: dict[str, Any], source: str) -> None:
    """Fail when the data cannot train anything: no dislikes, or no training sample.

    Why: such a dataset used to pass this stage silently and fail (or train on nothing) later.
    """
    if stats["dislikes"] == 0:
        raise DataValidationError(
            f"{source}: none of the {stats['events']:,} events is a dislike (feedback -1); check how dislikes "
            "are mapped (data.columns, dislike_max_rating)"
        )
    if stats["samples"]["train"] == 0:
        raise DataValidationError(
            f"{source}: no training sample (a dislike with history before the valid cut-off "
            f"{stats['valid_cutoff']}); samples per split: {stats['samples']}"
        )


def _load(
    cfg: DataConfig, progress: Progress, log: RepairLog
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """(events, items, user_facets or None, exposures or None). The simulator shows its own progress bar.
    Bad rows are repaired or dropped into ``log`` (see :mod:`conrec.data.repair`)."""
    if cfg.source == "simulator":
        from conrec.data.simulator import simulate

        task = progress.add_task("simulating feeds", total=cfg.simulator.days * cfg.simulator.sessions_per_day)
        sim = simulate(cfg.simulator, progress=lambda done, _total: progress.update(task, completed=done))
        return sim.events, sim.items, sim.user_facets, sim.exposures
    from conrec.data.loaders import load_source

    task = progress.add_task(f"loading {cfg.source}", total=1)
    events, items = load_source(cfg, log)
    exposures = None
    if cfg.source == "movielens100k":
        from conrec.data.exposures import movielens100k_exposures

        exposures = movielens100k_exposures(cfg.dislike_max_rating, cfg.like_min_rating)
    progress.update(task, completed=1)
    return events, items, None, exposures


def run(dcfg: DataConfig, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """Load -> validate -> split -> label -> write into ``run_dir/data``; returns the stats dict.

    Takes only the ``data`` section (the stage reads no other): see the stage protocol in :mod:`conrec.stages`.
    """
    console = console or Console()
    rd = RunDir(run_dir)
    log = RepairLog(dcfg.on_invalid)
    with stage_progress(console=console, label="{task.description}", remaining=False) as progress:
        events, items, facets, exposures = _load(dcfg, progress, log)
        steps = progress.add_task("validate, split, label, write", total=4)
        items = validate_items(items, source=f"{dcfg.source} items")
        events = validate_events(events, items, source=f"{dcfg.source} events")
        progress.advance(steps)
        ordered = order_events(events)
        cuts = time_cutoffs(events, dcfg.split)
        points = select_points(ordered, cuts, dcfg.split)
        progress.advance(steps)
        samples = attach_history_and_labels(ordered, points, dcfg.split)
        progress.advance(steps)
        # everything that can fail runs before the first file is written
        stats = data_stats(events, items, samples, cuts, dcfg.source)
        stats["split_protocol"] = dcfg.split.protocol  # per_user: the cut-offs above are not used
        stats["invalid_rows"] = {"policy": dcfg.on_invalid, **log.counts}
        check_learnable(stats, dcfg.source)
        exposure_log = _exposures(exposures, events, items, dcfg.source)
        rd.clear_done("data")
        write_parquet(events, rd.events)
        write_parquet(items, rd.items)
        write_parquet(samples, rd.samples)
        write_parquet(exposure_log, rd.exposures)
        if facets is not None:
            write_parquet(facets, rd.data / "user_facets.parquet")
        write_json(stats, rd.data / "stats.json")
        progress.advance(steps)
    warn_repairs(log, dcfg.source, console)
    console.print(summary_table(stats))
    rd.mark_done("data", {"events": stats["events"], "samples": stats["samples"]})
    return stats


def _exposures(exposures: pl.DataFrame | None, events: pl.DataFrame, items: pl.DataFrame, source: str) -> pl.DataFrame:
    """The source's exposure log, or its feedback events when it logs none (see :mod:`conrec.data.exposures`)."""
    from conrec.data.exposures import exposures_from_events, validate_exposures

    raw = exposures if exposures is not None else exposures_from_events(events)
    return validate_exposures(raw, items, source=f"{source} exposures")


def warn_repairs(log: RepairLog, source: str, console: Console) -> None:
    """One warning block with every repair the loaders made (nothing when the data was clean)."""
    if not log.total:
        return
    lines = "\n".join(f"  - {line}" for line in log.lines())
    console.print(
        f"[yellow]warning: {source}: {log.total:,} invalid row(s) or item(s) repaired or dropped "
        f"(data.on_invalid: drop; counts in data/stats.json):[/yellow]\n{lines}",
        highlight=False,
    )


def summary_table(stats: dict[str, Any]) -> Table:
    t = Table(title=f"data: {stats['source']}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("users / items", f"{stats['users']:,} / {stats['items']:,}")
    t.add_row("events (dislikes)", f"{stats['events']:,} ({stats['dislikes']:,}, {stats['dislike_share']:.1%})")
    t.add_row("median dislikes per user", f"{stats['median_negatives_per_user']:g}")
    t.add_row("time span", f"{stats['first_event'][:10]} .. {stats['last_event'][:10]}")
    t.add_row("valid / test cut-off", f"{stats['valid_cutoff'][:16]} / {stats['test_cutoff'][:16]}")
    s = stats["samples"]
    t.add_row("samples train / valid / test", f"{s['train']:,} / {s['valid']:,} / {s['test']:,}")
    return t
