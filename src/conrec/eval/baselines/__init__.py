"""Baselines for negative recommendation, one module each, and the registry that builds them.

:data:`REGISTRY` maps a baseline name to its factory ``(EvalConfig) -> Recommender`` and the
``EvalConfig`` attribute holding its (tunable) settings, so the eval stage, tuning and the tests
build baselines one way. Factories import lazily: torch loads only when SASRec is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from conrec.errors import ConfigError
from conrec.eval.baselines.base import Recommender
from conrec.eval.config import BASELINE_NAMES, EvalConfig
from conrec.eval.cost import EASE, LINEAR, Cost, sasrec_cost, taste_exposure_cost


@dataclass(frozen=True)
class BaselineSpec:
    """How to build one baseline: ``build(eval_cfg)``; its settings live at ``eval_cfg.<settings>``;
    ``cost(eval_cfg)``: how its time grows with the catalogue (see :mod:`conrec.eval.cost`).

    What it reads beyond events and items' ids, declared here so that the places that act on it follow the registry
    (:func:`facet_readers`, :func:`sid_readers`): ``reads_facets``, the item columns ``eval.category.columns`` names
    (True, or a rule of the eval config): the eval preflight refuses a missing column before SID, SFT and GRPO train,
    and the report notes a near-unique column; ``reads_sid``, the sid stage's text vectors (``sid/text_vectors.npy``,
    a column of the items it is given: :func:`conrec.eval.baselines.content.with_text_vectors`): the eval stage then
    depends on the sid stage and adds the column. Why: these were lists of names in four modules, and a new facet
    baseline missed the preflight and failed after training (found by a contributor probe, 7 December 2026)."""

    name: str
    settings: str
    build: Callable[[EvalConfig], Recommender]
    cost: Callable[[EvalConfig], Cost] = lambda _cfg: LINEAR
    reads_facets: bool | Callable[[EvalConfig], bool] = False
    reads_sid: bool = False

    def reads_facets_of(self, cfg: EvalConfig) -> bool:
        """Whether, configured by ``cfg``, it reads the item columns ``eval.category.columns`` names."""
        return self.reads_facets(cfg) if callable(self.reads_facets) else self.reads_facets


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


def _taste_exposure_reads_facets(cfg: EvalConfig) -> bool:
    """Taste x exposure reads the facet columns when its personal score is (or its tuning grid may make it) the
    category one."""
    personal = {cfg.taste_exposure.personal, *(cfg.taste_exposure.grid.get("personal", []) if cfg.tune else [])}
    return "category" in personal


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
        BaselineSpec("category", "category", _category, reads_facets=True),
        BaselineSpec("sasrec", "sasrec", _sasrec, lambda cfg: sasrec_cost(cfg.sasrec.epochs, cfg.sasrec.hidden)),
        BaselineSpec("ease", "ease", _ease, lambda _cfg: EASE),
        BaselineSpec(
            "taste_exposure", "taste_exposure", _taste_exposure, lambda cfg: taste_exposure_cost(category_share(cfg)),
            reads_facets=_taste_exposure_reads_facets,
        ),
        BaselineSpec("swing", "swing", _swing),
        BaselineSpec("content", "content", _content, reads_sid=True),
        BaselineSpec("facet_rule", "facet_rule", _facet_rule, reads_facets=True),
    )
}
# raises, not asserts: python -O strips those
if tuple(REGISTRY) != BASELINE_NAMES:
    raise RuntimeError(
        f"conrec.eval.config.BASELINE_NAMES must list the registry's baselines in its order: it lists {list(BASELINE_NAMES)}, "
        f"the registry has {list(REGISTRY)}"
    )
if _no_settings := [s.settings for s in REGISTRY.values() if s.settings not in EvalConfig.model_fields]:
    raise RuntimeError(f"every BaselineSpec.settings must be a field of conrec.eval.config.EvalConfig: missing {_no_settings}")

BASELINES = BASELINE_NAMES


def facet_readers(cfg: EvalConfig) -> list[str]:
    """The baselines ``cfg.baselines`` lists that read the item columns ``eval.category.columns`` names, in its order
    (:attr:`BaselineSpec.reads_facets`; pure)."""
    return [b for b in cfg.baselines if b in REGISTRY and REGISTRY[b].reads_facets_of(cfg)]


def sid_readers(baselines: Iterable[str]) -> list[str]:
    """The ``baselines`` that read the sid stage's text vectors (:attr:`BaselineSpec.reads_sid`; names only, so a
    config's JSON dump does: :func:`conrec.stages._eval_reads`; a name no longer registered reads nothing)."""
    return [b for b in baselines if b in REGISTRY and REGISTRY[b].reads_sid]


def make_baseline(name: str, cfg: EvalConfig | None = None) -> Recommender:
    """A fresh, unfitted baseline by name, configured from the eval section (``cfg.itemknn`` ...)."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"eval.baselines: unknown baseline {name!r}; known baselines are {', '.join(BASELINES)}")
    return spec.build(cfg or EvalConfig())


__all__ = ["BASELINES", "REGISTRY", "BaselineSpec", "Recommender", "facet_readers", "make_baseline", "sid_readers"]
