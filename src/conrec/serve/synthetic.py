"""A small synthetic run directory (items, events, SID map) for serving smoke tests and benchmarks.

Why: the HTTP layer can be exercised end to end with ``serve.model: popular`` before any model is
trained, without depending on the data or SID stages. Not a dataset for learning anything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from conrec.io import write_parquet
from conrec.runs import RunDir


def synthetic_tables(n_items: int = 500, n_users: int = 100, events_per_user: int = 40, seed: int = 0) -> dict[str, pl.DataFrame]:
    """items / events / sid_map in the canonical layouts; dislikes follow a Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{j}" for j in range(n_items)]
    items = pl.DataFrame(
        {
            "item_id": item_ids,
            "title": [f"Synthetic item {j}" for j in range(n_items)],
            "text": [f"Description of synthetic item {j}" for j in range(n_items)],
            "category": [f"c{j % 7}" for j in range(n_items)],
        }
    )
    weights = 1.0 / np.arange(1, n_items + 1)
    weights /= weights.sum()
    n = n_users * events_per_user
    events = pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(n_users) for _ in range(events_per_user)],
            "item_id": [item_ids[j] for j in rng.choice(n_items, size=n, p=weights)],
            "ts": np.tile(np.arange(events_per_user, dtype=np.int64) * 3600 + 1_700_000_000, n_users),
            "feedback": rng.choice(np.array([-1, 1], dtype=np.int8), size=n, p=[0.3, 0.7]),
        }
    ).with_columns(pl.col("feedback").cast(pl.Int8))
    codes = [[j // 64, (j // 8) % 8, j % 8] for j in range(n_items)]
    sid_map = pl.DataFrame(
        {
            "item_id": item_ids,
            "codes": codes,
            "sid": ["".join(f"<{lvl}_{c}>" for lvl, c in zip("abc", cs)) for cs in codes],
        }
    )
    return {"items": items, "events": events, "sid_map": sid_map}


def write_synthetic_run(run_dir: str | Path, **kwargs: int) -> RunDir:
    """Write :func:`synthetic_tables` at the run-directory paths the service reads."""
    run = RunDir(run_dir)
    tables = synthetic_tables(**kwargs)
    write_parquet(tables["items"], run.items)
    write_parquet(tables["events"], run.events)
    write_parquet(tables["sid_map"], run.sid_map)
    return run
