"""Baselines for negative recommendation, one module each, and :func:`make_baseline`."""

from __future__ import annotations

from conrec.eval.baselines.base import Recommender
from conrec.eval.config import BASELINE_NAMES, EvalConfig
from conrec.errors import ConfigError

BASELINES = BASELINE_NAMES


def make_baseline(name: str, cfg: EvalConfig | None = None) -> Recommender:
    """A fresh, unfitted baseline by name, configured from the eval section (``cfg.itemknn`` ...)."""
    cfg = cfg or EvalConfig()
    if name == "popularity":
        from conrec.eval.baselines.popularity import PopularityRecommender

        return PopularityRecommender()
    if name == "itemknn":
        from conrec.eval.baselines.itemknn import ItemKnnRecommender

        return ItemKnnRecommender(cfg.itemknn)
    if name == "category":
        from conrec.eval.baselines.category import CategoryRecommender

        return CategoryRecommender(cfg.category)
    if name == "sasrec":
        from conrec.eval.baselines.sasrec import SasrecRecommender

        return SasrecRecommender(cfg.sasrec, seed=cfg.seed)
    raise ConfigError(f"eval.baselines: unknown baseline {name!r}; known baselines are {', '.join(BASELINES)}")


__all__ = ["BASELINES", "Recommender", "make_baseline"]
