"""Benchmark the data stage on 1,000,000 synthetic events: load -> validate -> split -> labels.

Usage: ``python benchmarks/data_pipeline.py [--events 1000000] [--users 20000] [--items 30000]``

Events are generated with vectorised numpy (long-tailed user activity and item popularity, ~5%
dislikes over 90 days), written to Parquet and read back (the "load" step, as a ``table`` source
would), validated against the items table, split at global time cut-offs and labelled with
history / next / future negatives. Prints events/s per step and overall, and peak memory (the
process's maximum resident set size: polars allocates outside Python, so tracemalloc would miss it).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import _script
import numpy as np
import polars as pl

from conrec.data.config import SplitConfig
from conrec.data.schema import validate_events, validate_items
from conrec.data.splits import attach_history_and_labels, order_events, select_points, time_cutoffs
from conrec.io import write_parquet


def synthetic_events(n_events: int, n_users: int, n_items: int, days: int = 90, dislike_share: float = 0.05, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    user_w = rng.pareto(1.5, n_users) + 1.0
    item_w = rng.pareto(1.2, n_items) + 1.0
    users = rng.choice(n_users, size=n_events, p=user_w / user_w.sum())
    items = rng.choice(n_items, size=n_events, p=item_w / item_w.sum())
    ts = 1_700_000_000 + rng.integers(0, days * 86_400, size=n_events)
    feedback = np.where(rng.random(n_events) < dislike_share, -1, 1).astype(np.int8)
    user_names = np.char.add("u", np.arange(n_users).astype(str))
    item_names = np.char.add("i", np.arange(n_items).astype(str))
    events = pl.DataFrame({"user_id": user_names[users], "item_id": item_names[items], "ts": ts, "feedback": feedback})
    items_df = pl.DataFrame({"item_id": item_names, "title": np.char.add("Item ", np.arange(n_items).astype(str))})
    return events, items_df


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=_script.positive, default=1_000_000)
    ap.add_argument("--users", type=_script.positive, default=20_000)
    ap.add_argument("--items", type=_script.positive, default=30_000)
    args = ap.parse_args()
    cfg = SplitConfig()

    t = time.perf_counter()
    events, items = synthetic_events(args.events, args.users, args.items)
    print(f"generate  {time.perf_counter() - t:6.2f} s  ({args.events:,} events, {args.users:,} users, {args.items:,} items)")
    print(f"peak RSS after generation: {peak_rss_mb():,.0f} MB")
    n = events.height
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "events.parquet"
        t = time.perf_counter()
        write_parquet(events, path)
        del events
        events = pl.read_parquet(path)
        timings["load (write+read Parquet)"] = time.perf_counter() - t

    t = time.perf_counter()
    items = validate_items(items)
    events = validate_events(events, items)
    timings["validate"] = time.perf_counter() - t

    t = time.perf_counter()
    ordered = order_events(events)
    cuts = time_cutoffs(events, cfg)
    points = select_points(ordered, cuts, cfg)
    timings["split"] = time.perf_counter() - t

    t = time.perf_counter()
    samples = attach_history_and_labels(ordered, points, cfg)
    timings["labels"] = time.perf_counter() - t

    for step, sec in timings.items():
        print(f"{step:<28} {sec:6.2f} s  {n / sec:>12,.0f} events/s")
    total = sum(timings.values())
    print(f"{'overall':<28} {total:6.2f} s  {n / total:>12,.0f} events/s")
    counts = dict(samples.group_by("split").len().iter_rows())
    hist_len = samples["hist_items"].list.len().sum()
    print(f"samples: {counts} ({hist_len:,} history entries)")
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    sys.exit(_script.main(main))
