"""A small synthetic run directory (items, samples, SID map) for tests, benchmarks and smoke runs.

Why here and not in the data stage: the LM stages need inputs that are *already* in the run-dir
contract (``data/items.parquet``, ``data/samples.parquet``, ``sid/sid_map.parquet``) without
running the data and SID stages (which need an encoder and minutes of CPU). Users dislike items of
one "genre" and like another, so a model can learn something within a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from conrec.io import write_parquet
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap

GENRES = ("Action", "Comedy", "Drama", "Horror")


def toy_tables(
    n_items: int = 48, n_users: int = 24, samples_per_user: int = 3, seed: int = 0, codebook_sizes: tuple[int, ...] = (4, 4, 4)
) -> tuple[pl.DataFrame, pl.DataFrame, SidMap]:
    """(items, samples, sid_map) following the canonical schemas; SIDs level 0 = genre."""
    if n_items > int(np.prod(codebook_sizes)):
        raise ValueError(f"{n_items} items do not fit codebook sizes {codebook_sizes}")
    rng = np.random.default_rng(seed)
    item_ids = [f"i{j}" for j in range(n_items)]
    genre = [GENRES[j % len(GENRES)] for j in range(n_items)]
    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"{g} movie number {j}" for j, g in enumerate(genre)],
            "text": [f"A {g.lower()} film." for g in genre],
            "category": genre,
        }
    )
    # level 0 = genre (plus a block offset when a genre outgrows the lower levels), the remaining
    # levels enumerate the items of the genre
    cap = int(np.prod(codebook_sizes[1:]))
    codes = []
    per_genre: dict[int, int] = {}
    for j in range(n_items):
        g = j % len(GENRES)
        c = per_genre.get(g, 0)
        per_genre[g] = c + 1
        level0 = g % codebook_sizes[0] + len(GENRES) * (c // cap)
        if level0 >= codebook_sizes[0]:
            raise ValueError(f"{n_items} items do not fit codebook sizes {codebook_sizes} with {len(GENRES)} genres")
        c %= cap
        rest = []
        for size in reversed(codebook_sizes[1:]):
            rest.append(c % size)
            c //= size
        codes.append([level0, *reversed(rest)])
    sid_map = SidMap(item_ids, np.array(codes, dtype=np.int64), list(codebook_sizes))

    by_genre = {g: [i for i, gg in zip(item_ids, genre) if gg == g] for g in GENRES}
    rows = []
    sid = 0
    t0 = 1_000_000_000
    for u in range(n_users):
        hate, love = GENRES[u % len(GENRES)], GENRES[(u + 1) % len(GENRES)]
        hist_items: list[str] = []
        hist_fb: list[int] = []
        for s in range(samples_per_user):
            # a few new events, then an evaluation point
            for _ in range(int(rng.integers(1, 4))):
                hist_items.append(str(rng.choice(by_genre[love])))
                hist_fb.append(1)
            hist_items.append(str(rng.choice(by_genre[hate])))
            hist_fb.append(-1)
            fut = [str(x) for x in rng.choice(by_genre[hate], size=3, replace=False)]
            split = "train" if s < samples_per_user - 1 else ("test" if u % 2 else "valid")
            ts = t0 + u * 10_000 + s * 1_000
            rows.append(
                {
                    "sample_id": sid,
                    "user_id": f"u{u}",
                    "split": split,
                    "ts": ts,
                    "hist_items": list(hist_items),
                    "hist_feedback": list(hist_fb),
                    # one event every 12 hours, the most recent 12 hours before the point
                    "hist_ts": [ts - (len(hist_items) - k) * 43_200 for k in range(len(hist_items))],
                    "next_neg": fut[0],
                    "future_negs": fut,
                    "later_negs": fut,
                    "later_neg_ts": [ts, ts + 3600, ts + 7200],
                    "future_pos": [by_genre[love][(u + s) % len(by_genre[love])]],  # no rng draw: streams unchanged
                }
            )
            sid += 1
    samples = pl.DataFrame(
        rows,
        schema={
            "sample_id": pl.Int64,
            "user_id": pl.String,
            "split": pl.String,
            "ts": pl.Int64,
            "hist_items": pl.List(pl.String),
            "hist_feedback": pl.List(pl.Int8),
            "hist_ts": pl.List(pl.Int64),
            "next_neg": pl.String,
            "future_negs": pl.List(pl.String),
            "later_negs": pl.List(pl.String),
            "later_neg_ts": pl.List(pl.Int64),
            "future_pos": pl.List(pl.String),
        },
    )
    return items, samples, sid_map


def write_toy_run(root: str | Path, **kwargs) -> RunDir:
    """Write :func:`toy_tables` into ``root`` as a run dir whose data and SID stages are done."""
    run = RunDir(root)
    items, samples, sid_map = toy_tables(**kwargs)
    write_parquet(items, run.items)
    write_parquet(samples, run.samples)
    sid_map.to_parquet(run.sid_map)
    run.mark_done("data")
    run.mark_done("sid")
    return run


def toy_events(samples: pl.DataFrame, seconds_before: int = 500) -> pl.DataFrame:
    """An events table consistent with a toy samples table: each sample's history, replayed one
    second apart ending ``seconds_before`` seconds before the sample (what the GRPO co-dislike fit reads)."""
    rows = []
    for r in samples.iter_rows(named=True):
        for k, (item, fb) in enumerate(zip(r["hist_items"], r["hist_feedback"])):
            rows.append((r["user_id"], item, r["ts"] - seconds_before + k, fb))
    schema = {"user_id": pl.String, "item_id": pl.String, "ts": pl.Int64, "feedback": pl.Int8}
    return pl.DataFrame(rows, schema=schema, orient="row").unique(["user_id", "item_id", "ts"]).sort("ts")


def write_toy_events(run: RunDir, seconds_before: int = 500) -> pl.DataFrame:
    """Write :func:`toy_events` of the run's samples and the ``data/stats.json`` cut-offs the data stage
    would record for them (default split settings): what GRPO reads besides the samples."""
    from conrec.data.config import SplitConfig
    from conrec.data.splits import time_cutoffs
    from conrec.io import read_parquet, write_json

    events = toy_events(read_parquet(run.samples), seconds_before=seconds_before)
    write_parquet(events, run.events)
    cuts = time_cutoffs(events, SplitConfig())
    write_json({"source": "toy", "valid_cutoff_ts": cuts.valid, "test_cutoff_ts": cuts.test}, run.data / "stats.json")
    return events
