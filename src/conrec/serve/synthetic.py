"""A small synthetic run directory (items, events, SID map) for serving smoke tests and benchmarks.

Why: the HTTP layer can be exercised end to end with ``serve.model: popular`` before any model is
trained, without running the data or SID stages. Not a dataset for learning anything. The service
serves only what is current, so the run is recorded as made by those two stages, with stand-ins for
the outputs the service does not read (:func:`record_serving_tables`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from conrec.config import PipelineConfig
from conrec.data.splits import SAMPLE_SCHEMA
from conrec.io import write_json, write_parquet
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


def write_synthetic_run(run_dir: str | Path, cfg: PipelineConfig | None = None, **kwargs: int) -> RunDir:
    """Write :func:`synthetic_tables` at the run-directory paths the service reads, recorded as the
    data and SID stages' outputs for ``cfg`` (default: the default config at ``run_dir``)."""
    run = RunDir(run_dir)
    tables = synthetic_tables(**kwargs)
    write_parquet(tables["items"], run.items)
    write_parquet(tables["events"], run.events)
    write_parquet(tables["sid_map"], run.sid_map)
    record_serving_tables(cfg or PipelineConfig(run_dir=run.root))
    return run


def record_serving_tables(cfg: PipelineConfig) -> None:
    """Record a run directory that holds the serving tables (items, events, SID map) as finished
    by the data and SID stages with ``cfg``, writing stand-ins for their other outputs.

    The samples table is empty (no evaluation points: the inspector says so), the stats say
    ``synthetic``, and the quantiser and the embeddings are placeholders that nothing serving reads.
    """
    from conrec.pipeline import record_finished

    run = RunDir(cfg.run_dir)
    if not run.samples.exists():
        write_parquet(pl.DataFrame(schema=SAMPLE_SCHEMA), run.samples)
    for stage in ("data", "sid"):
        if not (run.stage_dir(stage) / "stats.json").exists():
            write_json({"source": "synthetic"}, run.stage_dir(stage) / "stats.json")
    if not run.quantizer.exists():
        run.quantizer.write_bytes(b"synthetic run: no quantiser")
    for vectors in (run.embeddings, run.text_vectors):
        if not vectors.exists():
            np.save(vectors, np.zeros((0, 1), dtype=np.float32))
    for stage in ("data", "sid"):
        run.mark_done(stage, {"synthetic": True})
        record_finished(cfg, stage)
