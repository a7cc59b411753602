"""Choose each baseline's settings on the valid split: a small grid, the same budget for all.

Protocol (never touches test): fit every grid point on the events a valid-split model may see
(before the valid cut-off, or before each user's valid start under the per-user protocol), score
FHR@k on the valid samples, keep the best (the first listed wins ties). The caller then refits the
chosen settings on the events before the *test* cut-off and evaluates test. When every grid point
scores the same the record says so (``tied``): the first point was kept, nothing was chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from conrec.eval.baselines import REGISTRY
from conrec.eval.baselines.base import EpochHook, watch_epochs
from conrec.eval.config import EvalConfig
from conrec.eval.metrics import fhr_at_k


@dataclass
class TuneResult:
    """One baseline's tuning: every grid point's valid FHR@k, and the chosen one."""

    name: str
    k: int
    tried: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    chosen: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def best_score(self) -> float:
        return max((s for _, s in self.tried), default=float("nan"))

    @property
    def tied(self) -> bool:
        """Every one of several grid points scored the same: the first was kept by the tie rule, not chosen (a K at or
        above the catalogue, one valid point, a baseline with no signal: each gave a "choice" that was the first point)."""
        return len(self.tried) > 1 and len({s for _, s in self.tried}) == 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "chosen": self.chosen,
            "tied": self.tied,
            "valid_fhr": self.best_score,
            "tried": [{"params": p, "valid_fhr": s} for p, s in self.tried],
            "seconds": round(self.seconds, 2),
        }


def valid_fhr(recommendations: list[list[str]], samples: pl.DataFrame, k: int) -> float:
    """Mean FHR@k of ``recommendations`` (aligned with ``samples`` rows) against ``future_negs``."""
    futures = samples["future_negs"].to_list()
    return float(np.mean([fhr_at_k(r, set(f or ()), k) for r, f in zip(recommendations, futures)]))


def tune_baseline(
    name: str, ecfg: EvalConfig, fit_events: pl.DataFrame, items: pl.DataFrame, valid_samples: pl.DataFrame, k: int,
    on_point: Callable[[int, int], None] | None = None, on_epoch: EpochHook | None = None,
) -> tuple[EvalConfig, TuneResult]:
    """(``ecfg`` with ``name``'s chosen settings, the tuning record). No grid: the settings as given.

    ``on_point(i, n)`` is called before the i-th of the n grid points is fitted (1-based). Why: the eval stage shows
    it in its bar; a 12-minute SASRec tuning printed the same ``3/8 (38%)`` baseline count for 12 minutes.
    ``on_epoch`` is given to each grid point's model that trains in epochs (:func:`watch_epochs`), for the same bar."""
    spec = REGISTRY[name]
    settings = getattr(ecfg, spec.settings)
    keys = list(settings.grid)
    result = TuneResult(name, k)
    started = time.perf_counter()
    best: tuple[float, Any] | None = None
    points = settings.grid_points()
    for i, point in enumerate(points, start=1):
        if on_point is not None:
            on_point(i, len(points))
        cfg = ecfg.model_copy(update={spec.settings: point})
        model = spec.build(cfg)
        watch_epochs(model, on_epoch)
        model.fit(fit_events, items)
        score = valid_fhr(model.recommend(valid_samples, k), valid_samples, k)
        params = {key: getattr(point, key) for key in keys}
        result.tried.append((params, score))
        if best is None or score > best[0]:
            best = (score, point)
    assert best is not None
    result.chosen = {key: getattr(best[1], key) for key in keys}
    result.seconds = time.perf_counter() - started
    return ecfg.model_copy(update={spec.settings: best[1]}), result
