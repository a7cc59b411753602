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
import os
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from conrec.console_text import shown
from conrec.data.config import DataConfig, SplitConfig
from conrec.data.engine import get_engine
from conrec.data.engine.base import EVENTS_FILE, SAMPLES_FILE, DataEngine, EventsInput
from conrec.data.repair import RepairLog, event_id_warnings, item_warnings
from conrec.data.schema import MOSTLY_DISLIKES, validate_events, validate_items
from conrec.data.splits import share_overlap, share_overlap_warning
from conrec.data.stats import data_stats
from conrec.errors import ConrecError, DataValidationError
from conrec.io import atomic_path, locked_temp_dir, write_json, write_parquet
from conrec.progress import stage_progress
from conrec.runs import RunDir


def check_learnable(stats: dict[str, Any], source: str, labelled: bool = False) -> None:
    """Fail when the data cannot train anything: no dislikes, or no training sample; ``labelled``: the feedback is
    mapped by ``data.feedback_labels`` (which the advice then names, not ``dislike_max_rating``).

    Why: such a dataset used to pass this stage silently and fail (or train on nothing) later.
    """
    if stats["dislikes"] == 0:
        how = ("raise data.simulator.dislike_prob_on_facet or dislike_prob_background" if source == "simulator"
               else "check data.feedback_labels: no value the log holds is mapped to -1 (conrec learns from explicit negative "
               "feedback, a hide, a thumbs-down, a low rating; a log of views, clicks or purchases alone has none)" if labelled
               else "check how dislikes are mapped (data.columns, dislike_max_rating)")
        raise DataValidationError(f"{source}: none of the {stats['events']:,} events is a dislike (feedback -1); {how}")
    if stats["samples"]["train"] == 0:
        before = ("its user's valid points" if stats.get("split_protocol") == "per_user"  # the global cut-off plays no part
                  else f"the valid cut-off {stats['valid_cutoff']}")
        raise DataValidationError(f"{source}: no training sample (a dislike with history before {before}); samples per split: {stats['samples']}")


def _load(
    cfg: DataConfig, engine: DataEngine, progress: Progress, log: RepairLog
) -> tuple[EventsInput, pl.DataFrame, pl.DataFrame | None, pl.DataFrame | None]:
    """(events, items, user_facets or None, exposures or None). The simulator shows its own progress bar.

    A ``table`` source whose engine reads the file itself (Spark; polars when streaming) is only
    scanned here, for its items (repaired into ``log``): the events never pass through this process's
    memory. The engine applies ``data.on_invalid`` to them as the loaders do and reports what it
    dropped in :attr:`BuildResult.dropped`, which :func:`run` records (exact duplicates included:
    polars streaming drops them per user partition, Spark by one window). Bad rows of the other sources are
    repaired or dropped into ``log`` by their loaders (see :mod:`conrec.data.repair`).
    """
    if cfg.source == "table" and engine.reads_file(cfg):
        from conrec.data.engine.scan import scan_table, table_items

        assert cfg.events_path is not None  # scan_table checked it
        items = table_items(cfg, scan_table(cfg), log)
        return EventsInput(table=Path(cfg.events_path)), items, None, None
    if cfg.source == "simulator":
        from conrec.data.simulator import simulate

        task = progress.add_task("simulating feeds", total=cfg.simulator.days * cfg.simulator.sessions_per_day)
        sim = simulate(cfg.simulator, progress=lambda done, _total: progress.update(task, completed=done))
        events, items, facets, exposures = sim.events, sim.items, sim.user_facets, sim.exposures
    else:
        from conrec.data.loaders import load_source

        task = progress.add_task(f"loading {cfg.source}", total=1)
        events, items = load_source(cfg, log)
        facets, exposures = None, None
        if cfg.source == "movielens100k":
            from conrec.data.exposures import movielens100k_exposures

            exposures = movielens100k_exposures(cfg.dislike_max_rating, cfg.like_min_rating)
        progress.update(task, completed=1)
    items = validate_items(items, source=f"{cfg.source} items")
    events = validate_events(events, items, source=f"{cfg.source} events")
    return EventsInput(frame=events), items, facets, exposures


def run(dcfg: DataConfig, run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """Load -> validate -> split -> label -> write into ``run_dir/data``; returns the stats dict.

    Takes only the ``data`` section (the stage reads no other): see the stage protocol in :mod:`conrec.stages`.
    The engine (``data.engine``) writes the two big files into a staging directory; they are
    published (renamed into place) only after every check passed, so a failed run leaves no file.
    """
    console = console or Console()
    rd = RunDir(run_dir)
    engine = get_engine(dcfg.engine)
    log = RepairLog(dcfg.on_invalid)
    rd.data.mkdir(parents=True, exist_ok=True)
    item_notes: list[str] = []
    try:
        stats = _build(dcfg, rd, engine, log, console, item_notes)
    except ConrecError:  # the rows dropped are often why (no training sample once every time was unreadable): say so first
        _explain_bad_feedback(log, dcfg)
        warn_repairs(log, dcfg.source, console, stopped=True)
        raise
    _explain_bad_feedback(log, dcfg)
    warn_repairs(log, dcfg.source, console)
    per_user = per_user_points(dcfg.split, rd.samples, stats["dislikes"]) if dcfg.split.protocol == "per_user" else None
    console.print(summary_table(stats, per_user))
    if (warning := dislike_share_warning(stats)) is not None:
        console.print(f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False)
    if (note := unused_catalogue_note(stats)) is not None:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for warning in stats["warnings"]:  # kept in stats.json: the eval report repeats them
        console.print(f"[yellow]warning:[/yellow] {shown(warning)}", highlight=False)
    for note in item_notes:  # printed only: stats.json and the data files stay as they were
        console.print(f"[yellow]warning:[/yellow] {shown(note)}", highlight=False)
    if empty := [s for s in ("valid", "test") if stats["samples"].get(s) == 0]:
        why = tied_cutoffs_note(stats, rd.events, dcfg.split)
        console.print(f"[yellow]warning:[/yellow] no {' and no '.join(empty)} point: nothing to evaluate there "
                      f"(samples per split: {stats['samples']}){f': {why}' if why else ''}", highlight=False)
    rd.mark_done("data", {"events": stats["events"], "samples": stats["samples"]})
    return stats


def tied_cutoffs_note(stats: dict[str, Any], events: Path, split: SplitConfig) -> str | None:
    """Why a global-time split has no valid point when both cut-offs fell on one timestamp (None otherwise): the share
    of events at that second, the test split's real share and what would separate the cut-offs.

    Why: a log whose last second holds a block of events (a bulk import, times rounded to the day) puts both quantiles
    on it; the cut-offs coincide, the valid window ``[valid, test)`` is empty and the test split holds the whole block
    (40% of the events for ``test_frac`` 0.2 in the audit's log). All the stage said was "no valid point", so tuning and
    early stopping had nothing, for no reason it gave. ``events``: the published events file (scanned, any engine)."""
    cut = stats.get("test_cutoff_ts")
    if split.protocol != "global_time" or cut is None or stats.get("valid_cutoff_ts") != cut:
        return None
    n, at, after = pl.scan_parquet(events).select(pl.len(), at=(pl.col("ts") == cut).sum(), after=(pl.col("ts") >= cut).sum()).collect().row(0)
    if not n:
        return None
    return (
        f"the valid and test cut-offs fell on the same timestamp ({stats['test_cutoff'][:19]} UTC, ts {cut}) because {at / n:.1%} "
        f"of the events share it, so the valid split is empty and the test split holds {after / n:.1%} of the events, not "
        f"test_frac {split.test_frac:.0%}; the valid cut-off falls before that second only when data.split.valid_frac + "
        f"test_frac is above about {after / n:.1%} (or give those events their real times, or use data.split.protocol: per_user)"
    )


def _build(dcfg: DataConfig, rd: RunDir, engine: DataEngine, log: RepairLog, console: Console, notes: list[str]) -> dict[str, Any]:
    """Load, build, check and publish the data files into ``rd``; returns the stats dict (see :func:`run`);
    appends to ``notes`` the warnings about odd item ids and titles (:func:`conrec.data.repair.item_warnings`),
    user ids (:func:`conrec.data.repair.user_warnings`) and ids that are a missing-value placeholder
    (:func:`conrec.data.repair.placeholder_id_warnings`), the last two from one pass over the events
    (:func:`conrec.data.repair.event_id_warnings`)."""
    with stage_progress(console=console, label="{task.description}", remaining=False) as progress:
        events, items, facets, exposures = _load(dcfg, engine, progress, log)
        notes += item_warnings(items)
        label = f"validate, split, label ({engine.name}), write"
        steps = progress.add_task(label, total=3)
        # locked while in use: a staging directory a SIGKILL leaves goes at the next stage start (conrec.io)
        with locked_temp_dir(rd.data, "staging") as staging:
            built = engine.build(events, items, dcfg, staging, step=lambda what: progress.update(steps, description=f"{label}: {what}"),
                                 log_dir=rd.data)
            progress.update(steps, description=label)
            notes += event_id_warnings(pl.scan_parquet(staging / EVENTS_FILE))  # one pass over the events
            # invalid rows an engine dropped from the file it read (under on_invalid: error a duplicate raises here: nothing is published)
            for kind, n in built.dropped.items():
                log.record(kind, n, f"{dcfg.source} events")
            log.details.update(built.details)
            progress.advance(steps)
            stats = data_stats(
                built.events, built.samples, n_items=items.height, items_with_events=built.items_with_events,
                valid_cut=built.cuts.valid, test_cut=built.cuts.test, source=dcfg.source,
            )
            stats["split_protocol"] = dcfg.split.protocol  # per_user: the cut-offs above are not used
            stats["invalid_rows"] = {"policy": dcfg.on_invalid, **log.counts}
            stats["warnings"] = split_warnings(stats, dcfg.split, staging / SAMPLES_FILE)
            check_learnable(stats, dcfg.source, labelled=bool(dcfg.feedback_labels))
            _write_exposures(exposures, staging / EVENTS_FILE, items, dcfg.source, staging / "exposures.parquet")
            progress.advance(steps)
            rd.clear_done("data")
            os.replace(staging / EVENTS_FILE, rd.events)
            os.replace(staging / SAMPLES_FILE, rd.samples)
            os.replace(staging / "exposures.parquet", rd.exposures)
            write_parquet(items, rd.items)
            if facets is not None:
                write_parquet(facets, rd.data / "user_facets.parquet")
            else:  # an earlier simulated world's ground truth would be read as this data's (the taste check)
                (rd.data / "user_facets.parquet").unlink(missing_ok=True)
            write_json(stats, rd.data / "stats.json")
            progress.advance(steps)
    return stats


def split_warnings(stats: dict[str, Any], split: SplitConfig, samples: Path) -> list[str]:
    """The warnings about the split that stats.json keeps (its ``warnings``), so the eval report repeats them: today
    one, when the per-user split's valid and test points come from mostly different users
    (:func:`conrec.data.splits.share_overlap_warning`). ``samples``: the engine's samples file (scanned, any engine)."""
    if split.protocol != "per_user":
        return []
    overlap = share_overlap(pl.scan_parquet(samples))
    warning = share_overlap_warning(overlap, split, float(stats["median_negatives_per_user_with_any"]))
    return [] if warning is None else [warning]


def dislike_share_warning(stats: dict[str, Any]) -> str | None:
    """A warning when most events are dislikes, else None.

    Why: explicit dislikes are a minority in every log measured here (5% to 25%), so a majority means
    the mapping is off (a "no rating" code or an implicit interaction read as a low rating, a flag read
    the wrong way round); nothing downstream would stop, the model would learn the wrong target. A simulated
    world has no mapping: its ``data.simulator`` settings made the dislikes, so the advice names those.
    """
    share = float(stats.get("dislike_share") or 0.0)
    if share <= MOSTLY_DISLIKES:
        return None
    if stats.get("source") == "simulator":
        return (
            f"{share:.0%} of the events are dislikes; explicit dislikes are usually a minority: data.simulator's settings "
            "make most reactions dislikes (dislike_prob_on_facet and dislike_prob_background against positive_prob_min/max, "
            "or dislike_facets_per_user covering most of the n_categories + 18 tone and setting facets)"
        )
    return (
        f"{share:.0%} of the events are dislikes; explicit dislikes are usually a minority: check how they are mapped "
        "(dislike_max_rating, rating_range, feedback_labels; `conrec init` proposes them from the file)"
    )


UNUSED_CATALOGUE_SHARE = 0.5
"""The share of the items without any event above which :func:`unused_catalogue_note` speaks."""


def unused_catalogue_note(stats: dict[str, Any]) -> str | None:
    """One line when most of the catalogue appears in no event (else None): how many items, and what they cost.

    Why: a 50,000-item catalogue of which the events touch 500 printed only "users / items 60 / 50,000"; yet the model
    ranks every item, those 49,500 from their text alone (their SIDs), and encoding them took most of the SID stage
    (about 6 minutes), with no word of either."""
    n_items, used = int(stats.get("items") or 0), int(stats.get("items_with_events") or 0)
    unused = n_items - used
    if not n_items or unused / n_items <= UNUSED_CATALOGUE_SHARE:
        return None
    return (f"{unused:,} of the {n_items:,} items ({unused / n_items:.0%}) appear in no event: the model can rank them only "
            "from their text (their SIDs), and the SID stage spends time encoding them; leave out of the items file those "
            "that are not candidates")


def _write_exposures(exposures: pl.DataFrame | None, events_file: Path, items: pl.DataFrame, source: str, path: Path) -> None:
    """The source's exposure log, or its feedback events when it logs none (see :mod:`conrec.data.exposures`).

    Derived from the engine's events file as a streaming query: those events are already validated
    against the items and sorted by (user, ts), which is what :func:`validate_exposures` would do.
    """
    from conrec.data.exposures import exposures_from_events, validate_exposures

    if exposures is not None:
        write_parquet(validate_exposures(exposures, items, source=f"{source} exposures"), path)
        return
    with atomic_path(path) as tmp:
        exposures_from_events(pl.scan_parquet(events_file)).sink_parquet(tmp, engine="streaming")


def _explain_bad_feedback(log: RepairLog, dcfg: DataConfig) -> None:
    """Name the dropped feedback or rating values in the warning (:mod:`conrec.data.bad_feedback`), when rows were."""
    if log.counts.get("bad_feedback") and "bad_feedback" not in log.details:
        from conrec.data.bad_feedback import bad_feedback_detail

        if detail := bad_feedback_detail(dcfg):
            log.details["bad_feedback"] = detail


def warn_repairs(log: RepairLog, source: str, console: Console, stopped: bool = False) -> None:
    """One warning block with every repair the loaders made (nothing when the data was clean); ``stopped``:
    the stage is about to refuse the data, and writes no stats.json."""
    if not log.total:
        return
    lines = "\n".join(f"  - {shown(line)}" for line in log.lines())
    where = "before the error below, which they may explain" if stopped else "counts in data/stats.json"
    console.print(
        f"[yellow]warning: {shown(source)}: {log.total:,} invalid row(s) or item(s) repaired or dropped "
        f"(data.on_invalid: drop; {where}):[/yellow]\n{lines}",
        highlight=False,
    )


def per_user_points(split: SplitConfig, samples: Path, dislikes: int) -> tuple[str, str, str]:
    """(the rule with the shares it gave, the valid points' first and last day, the test points') of the per-user split,
    for :func:`summary_table`; ``dislikes``: all the events' (stats.json's ``dislikes``).

    Why: under ``protocol: per_user`` the table printed the global valid / test cut-offs (stats.json keeps them), which
    that split does not use; its test points started three months before the "test cut-off" printed. Why the realised
    shares (points / dislikes): each user's shares are rounded half up, so with few dislikes per user they are far
    from the configured ones (15.7% valid for valid_frac 10% on a log with 2 dislikes per median user).
    """
    rows = (pl.scan_parquet(samples).filter(pl.col("split").is_in(["valid", "test"]))
            .group_by("split").agg(pl.len(), pl.col("ts").min(), pl.col("ts").max().alias("last")).collect().iter_rows())
    points, spans = {}, {}
    for split_name, n, first, last in rows:
        points[split_name], spans[split_name] = int(n), (first, last)

    def days(name: str) -> str:
        return f"{utc_day(spans[name][0])} .. {utc_day(spans[name][1])}" if name in spans else "none"

    def share(name: str) -> str:
        return f"{points.get(name, 0) / dislikes:.1%}" if dislikes else "-"

    rule = f"per user: {split.valid_frac:.0%} / last {split.test_frac:.0%} of dislikes (realised as points: {share('valid')} / {share('test')})"
    return rule, days("valid"), days("test")


def utc_day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).strftime("%Y-%m-%d")


def summary_table(stats: dict[str, Any], per_user: tuple[str, str, str] | None = None) -> Table:
    """The stage's summary; ``per_user``: :func:`per_user_points`, printed instead of the global cut-offs, unused then."""
    t = Table(title=f"data: {stats['source']}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("users / items", f"{stats['users']:,} / {stats['items']:,}")
    t.add_row("events (dislikes)", f"{stats['events']:,} ({stats['dislikes']:,}, {stats['dislike_share']:.1%})")
    t.add_row("median dislikes per user", f"{stats['median_negatives_per_user']:g}")
    t.add_row("time span", f"{stats['first_event'][:10]} .. {stats['last_event'][:10]}")
    if per_user is None:
        t.add_row("valid / test cut-off", f"{stats['valid_cutoff'][:16]} / {stats['test_cutoff'][:16]}")
    else:
        t.add_row("valid / test split", per_user[0])
        t.add_row("valid points", per_user[1])
        t.add_row("test points", per_user[2])
    s = stats["samples"]
    t.add_row("samples train / valid / test", f"{s['train']:,} / {s['valid']:,} / {s['test']:,}")
    return t
