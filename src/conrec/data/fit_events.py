"""Which events a model evaluated on a split may be fitted on: one rule for baselines and the LM.

Why one module: the baselines (eval stage) and the LM's dense timeline task (SFT stage) must see
exactly the same training events, or a comparison between them would measure a leak, not a model.
Global protocol: every event before the split's cut-off. Per-user protocol: each user's events
strictly before that user's start of the split (:func:`conrec.data.splits.per_user_fit_events`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from conrec.data.config import SplitConfig
from conrec.data.splits import per_user_fit_events
from conrec.errors import StageInputError


def split_cutoff(stats: dict[str, Any] | None, split: str, split_samples: pl.DataFrame) -> tuple[int, str]:
    """(cut-off ts, where it came from). From stats.json when the data stage wrote it; otherwise the
    earliest evaluation time in the split (every history event of the split is before it anyway)."""
    key = f"{split}_cutoff_ts"
    if stats and isinstance(stats.get(key), int):
        return int(stats[key]), "data/stats.json"
    if split_samples.height == 0:  # it was int(None), a TypeError
        raise StageInputError(f"no {split} cut-off: data/stats.json has no {key} and the run has no {split} samples (rerun `conrec data`)")
    return int(split_samples["ts"].min()), f"min ts of the {split} samples (stats.json has no {key})"  # type: ignore[arg-type]


def fit_events_for(
    events: pl.DataFrame, split_cfg: SplitConfig, stats: dict[str, Any] | None, split: str, split_samples: pl.DataFrame
) -> tuple[pl.DataFrame, str]:
    """(events a model evaluated on ``split`` may be fitted on, how they were chosen); ``split_cfg``: ``data.split``."""
    protocol = split_cfg.protocol
    written = (stats or {}).get("split_protocol", "global_time")
    if written != protocol:
        raise StageInputError(
            f"data.split.protocol is {protocol!r} but the data stage wrote {written!r} samples; rerun `conrec data`"
        )
    if protocol == "per_user":
        return per_user_fit_events(events, split_cfg, split), f"each user's events before that user's {split} start"
    cutoff, source = split_cutoff(stats, split, split_samples)
    when = dt.datetime.fromtimestamp(cutoff, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return events.filter(pl.col("ts") < cutoff), f"events before the {split} cut-off, {when} (ts {cutoff}, {source})"


def training_events(run_dir: Path, split_cfg: SplitConfig, samples: pl.DataFrame | None = None) -> pl.DataFrame:
    """The events a run trains on: its data stage's events chosen by :func:`fit_events_for` for the split
    the run trains up to (``data.split.train_until``). What the LM's timeline task, the collaborative
    SID vectors and GRPO's co-dislike and Swing signals read, so all see exactly the baselines' fit
    events. ``samples``: the run's samples table when the caller has it already (read otherwise)."""
    return training_events_and_rule(run_dir, split_cfg, samples)[0]


def training_events_and_rule(run_dir: Path, split_cfg: SplitConfig, samples: pl.DataFrame | None = None) -> tuple[pl.DataFrame, str]:
    """:func:`training_events` and how they were chosen (for a stage's records)."""
    from conrec.io import read_json, read_parquet
    from conrec.runs import RunDir

    rd = RunDir(run_dir)
    events = read_parquet(rd.events, what="events table (run `conrec data` first)")
    if samples is None:
        samples = read_parquet(rd.samples, what="samples table (run `conrec data` first)", columns=["split", "ts"])  # all it reads
    stats_path = rd.data / "stats.json"
    stats = read_json(stats_path, what="data stats") if stats_path.exists() else None
    split = split_cfg.train_until
    return fit_events_for(events, split_cfg, stats, split, samples.filter(pl.col("split") == split))
