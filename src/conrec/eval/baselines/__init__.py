"""Baselines for negative recommendation, one module each, and the registry that builds them.

:data:`REGISTRY` maps a baseline name to its factory ``(EvalConfig) -> Recommender`` and the
``EvalConfig`` attribute holding its (tunable) settings, so the eval stage, tuning and the tests
build baselines one way. Factories import lazily: torch loads only when SASRec is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from conrec.errors import ConfigError
from conrec.eval.baselines.base import Recommender
from conrec.eval.config import BASELINE_NAMES, EvalConfig
from conrec.eval.cost import EASE, LINEAR, Cost, sasrec_cost, taste_exposure_cost


@dataclass(frozen=True)
class BaselineSpec:
    """How to build one baseline: ``build(eval_cfg)``; its settings live at ``eval_cfg.<settings>``;
    ``cost(eval_cfg)``: how its time grows with the catalogue (see :mod:`conrec.eval.cost`)."""

    name: str
    settings: str
    build: Callable[[EvalConfig], Recommender]
    cost: Callable[[EvalConfig], Cost] = lambda _cfg: LINEAR


def _popularity(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.popularity import PopularityRecommender

    return PopularityRecommender(cfg.popularity)


def _itemknn(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.itemknn import ItemKnnRecommender

    return ItemKnnRecommender(cfg.itemknn)


def _category(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.category import CategoryRecommender

    return CategoryRecommender(cfg.category)


def _sasrec(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.sasrec import SasrecRecommender

    return SasrecRecommender(cfg.sasrec, seed=cfg.seed)


def _ease(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.ease import EaseRecommender

    return EaseRecommender(cfg.ease)


def _taste_exposure(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.taste_exposure import TasteExposureRecommender

    return TasteExposureRecommender(cfg.taste_exposure, facets=cfg.category)


def _swing(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.swing import SwingRecommender

    return SwingRecommender(cfg.swing)


def _content(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.content import ContentRecommender

    return ContentRecommender(cfg.content)


def _facet_rule(cfg: EvalConfig) -> Recommender:
    from conrec.eval.baselines.facet_rule import FacetRuleRecommender

    return FacetRuleRecommender(cfg.facet_rule, facets=cfg.category)


def category_share(cfg: EvalConfig) -> float:
    """The share of taste x exposure's fits that take the facet (item x item) path: with ``eval.tune``, its grid points
    with ``personal: category`` and the refit (counted on that path when any grid point is: the grid may choose it), of
    the grid points + 1; without, 1 or 0 by ``personal``."""
    te = cfg.taste_exposure
    if not cfg.tune:
        return float(te.personal == "category")
    points = te.grid_points()
    on_path = sum(getattr(p, "personal", None) == "category" for p in points)
    return (on_path + (on_path > 0)) / (len(points) + 1)


REGISTRY: dict[str, BaselineSpec] = {
    s.name: s
    for s in (
        BaselineSpec("popularity", "popularity", _popularity),
        BaselineSpec("itemknn", "itemknn", _itemknn),
        BaselineSpec("category", "category", _category),
        BaselineSpec("sasrec", "sasrec", _sasrec, lambda cfg: sasrec_cost(cfg.sasrec.epochs, cfg.sasrec.hidden)),
        BaselineSpec("ease", "ease", _ease, lambda _cfg: EASE),
        BaselineSpec("taste_exposure", "taste_exposure", _taste_exposure, lambda cfg: taste_exposure_cost(category_share(cfg))),
        BaselineSpec("swing", "swing", _swing),
        BaselineSpec("content", "content", _content),
        BaselineSpec("facet_rule", "facet_rule", _facet_rule),
    )
}
assert tuple(REGISTRY) == BASELINE_NAMES, "eval.config.BASELINE_NAMES must list the registry's baselines"
assert all(s.settings in EvalConfig.model_fields for s in REGISTRY.values()), (
    f"every BaselineSpec.settings must be a field of eval.config.EvalConfig: missing "
    f"{[s.settings for s in REGISTRY.values() if s.settings not in EvalConfig.model_fields]}"
)

BASELINES = BASELINE_NAMES


def make_baseline(name: str, cfg: EvalConfig | None = None) -> Recommender:
    """A fresh, unfitted baseline by name, configured from the eval section (``cfg.itemknn`` ...)."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"eval.baselines: unknown baseline {name!r}; known baselines are {', '.join(BASELINES)}")
    return spec.build(cfg or EvalConfig())


__all__ = ["BASELINES", "REGISTRY", "BaselineSpec", "Recommender", "make_baseline"]
