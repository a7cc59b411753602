"""``data.source: simulator``: a seeded synthetic log with known per-user tastes (no file needed).

The loader keeps only the canonical tables; call :func:`conrec.data.simulator.simulate` directly to
keep the simulator's ground truth.
"""

from __future__ import annotations

import polars as pl

from conrec.data.config import DataConfig
from conrec.data.repair import RepairLog
from conrec.data.sources.base import Source


def _load(cfg: DataConfig, log: RepairLog) -> tuple[pl.DataFrame, pl.DataFrame]:
    from conrec.data.simulator import simulate

    sim = simulate(cfg.simulator)
    return sim.events, sim.items


SOURCE = Source("simulator", _load)
