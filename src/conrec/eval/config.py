"""Configuration of evaluation, the baselines and the report."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from conrec.config_base import StrictConfig
from conrec.swing import SwingConfig

BootstrapMetric = Literal["FHR", "FPrec", "FRecall", "HR", "NDCG", "LUF", "LIF"]
LmName = Literal["sft", "grpo"]


class _Strict(StrictConfig):
    """Unknown keys and silent bool/str -> number conversions are errors (see :mod:`conrec.config_base`)."""


class _Tunable(_Strict):
    """A baseline's settings plus ``grid``: values to try for some of them when ``eval.tune`` is on
    (every combination, scored on the valid split; see :mod:`conrec.eval.tuning`)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid_names_fields(self) -> _Tunable:
        fields = set(type(self).model_fields) - {"grid"}
        unknown = sorted(set(self.grid) - fields)
        if unknown:
            raise ValueError(f"grid names unknown setting(s) {unknown}; tunable settings are {sorted(fields)}")
        empty = sorted(k for k, v in self.grid.items() if not v)
        if empty:
            raise ValueError(f"grid lists no value for {empty}")
        return self

    def grid_points(self) -> list[_Tunable]:
        """Every combination of the grid as a validated copy of these settings (self when no grid)."""
        if not self.grid:
            return [self]
        keys = list(self.grid)
        base = self.model_dump()
        return [
            type(self).model_validate({**base, **dict(zip(keys, combo))})
            for combo in itertools.product(*(self.grid[k] for k in keys))
        ]


class PopularityConfig(_Tunable):
    """Global dislike popularity, optionally time-decayed towards the newest fit event."""

    half_life_days: float | None = Field(
        None, gt=0, description="a dislike's weight halves every this many days before the newest fit event (None = plain counts)"
    )
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"half_life_days": [None, 0.5, 2, 7, 30, 180]})


class EaseConfig(_Tunable):
    """EASE (Steck 2019): closed-form item-item regression on the user x item dislike matrix."""

    l2: float = Field(200.0, gt=0, description="L2 weight lambda of the closed form B = I - P / diag(P), P = (X'X + lambda I)^-1")
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"l2": [10, 50, 200, 500, 1000, 3000]})


class TasteExposureConfig(_Tunable):
    """Taste x exposure: a normalised personal score blended with normalised log dislike-popularity.

    Facet columns and separator are taken from ``eval.category`` (one place to name item facets).
    """

    personal: Literal["category", "itemknn"] = Field(
        "category", description="the personal score: recency-weighted category affinity or co-dislike item-kNN"
    )
    pop_weight: float = Field(0.5, ge=0.0, le=1.0, description="score = (1 - w) * personal + w * log-popularity, both scaled to [0, 1]")
    recency_decay: float = Field(0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j")
    top_neighbours: int = Field(100, ge=1, description="itemknn personal score: similarities kept per item")
    grid: dict[str, list[Any]] = Field(
        default_factory=lambda: dict[str, list[Any]]({"personal": ["category", "itemknn"], "pop_weight": [0.25, 0.5, 0.75]})
    )


class ContentConfig(_Tunable):
    """Content match: the item text vectors nearest to the user's recent dislikes, blended with log-popularity."""

    top_m: int = Field(3, ge=1, description="an item's personal score is the mean of its m highest cosines to the user's dislikes")
    max_dislikes: int = Field(100, ge=1, description="the user's most recent dislikes compared with each item")
    pop_weight: float = Field(0.5, ge=0.0, le=1.0, description="score = (1 - w) * personal + w * log-popularity, both scaled to [0, 1]")
    grid: dict[str, list[Any]] = Field(default_factory=lambda: dict[str, list[Any]]({"top_m": [1, 3, 10], "pop_weight": [0.25, 0.5]}))


class BootstrapConfig(_Strict):
    """Percentile bootstrap over evaluation points, or over users where one holds several (see :mod:`conrec.eval.bootstrap`)."""

    resamples: int = Field(1000, ge=1)
    level: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = 0
    metrics: list[BootstrapMetric] = Field(
        default_factory=lambda: list[BootstrapMetric](["FHR", "LUF", "LIF", "HR"]),
        description="metrics given a CI and a paired difference vs the best baseline, at every K",
    )


class ItemKnnConfig(_Tunable):
    """Item-item cosine similarity on the user x item co-dislike matrix."""

    recency_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j (1 = plain sum)"
    )
    top_neighbours: int = Field(100, ge=1, description="similarities kept per item (sparsity and noise control)")
    grid: dict[str, list[Any]] = Field(default_factory=lambda: dict[str, list[Any]]({"recency_decay": [0.7, 0.9, 1.0], "top_neighbours": [30, 200]}))


class SwingBaselineConfig(SwingConfig, _Tunable):
    """Swing co-dislike neighbours of the user's dislikes (:mod:`conrec.swing`; the reward's collaborative signal too).

    A sample's score for item ``c`` is ``sum_j decay**j * swing(d_j, c)`` over its dislikes ``d_0, d_1, ...``
    (most recent first), as item-kNN does with cosine: the two differ only in the similarity.
    """

    recency_decay: float = Field(0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j")
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"alpha": [1.0, 10.0], "recency_decay": [0.7, 0.9, 1.0]})


class CategoryConfig(_Tunable):
    """"Dislike the same category again": rank categories by the user's recent dislikes."""

    recency_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j (1 = frequency only)"
    )
    columns: list[str] = Field(
        default_factory=lambda: ["category"],
        min_length=1,
        description="item columns whose values are facets; with data.source simulator and no columns given, the "
        "simulator's three facet axes (category, tone, setting)",
    )
    separator: str | None = Field(
        "|", description="splits multi-valued categories (e.g. 'Action|Comedy'); None keeps the string whole"
    )
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"recency_decay": [0.5, 0.7, 0.8, 0.9, 0.95, 1.0]})


class FacetRuleConfig(_Tunable):
    """The facet rule (conrec.eval.baselines.facet_rule): the facets of the user's dislikes that their likes
    do not clear, times a personal exposure estimate. Facet columns and separator come from ``eval.category``."""

    prior: float = Field(1.0, gt=0.0, description="p(facet) = k / (k + prior) for a value in k of the history's dislikes")
    like_penalty: float = Field(2.0, ge=0.0, description="p(facet) is multiplied by exp(-like_penalty x the history's positives with it)")
    exposure_weight: float = Field(
        1.0, ge=0.0, description="weight of log(1 + dislikes of the item) + the log shares of its values in the user's history"
    )
    grid: dict[str, list[Any]] = Field(default_factory=lambda: {"like_penalty": [0.0, 2.0], "exposure_weight": [0.25, 0.5, 1.0]})


class SasrecConfig(_Tunable):
    """SASRec (causal self-attention) on users' dislike sequences, next-negative objective, full softmax."""

    hidden: int = Field(64, ge=8)
    layers: int = Field(2, ge=1)
    heads: int = Field(2, ge=1)
    max_len: int = Field(50, ge=2, description="most recent dislikes fed to the model")
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = the process's (top-level `threads`)")
    grid: dict[str, list[Any]] = Field(default_factory=lambda: dict[str, list[Any]]({"epochs": [15, 30, 60], "dropout": [0.2, 0.5]}))

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SasrecConfig:
        # found by probing: a traceback from the network's constructor, after SFT and GRPO had trained
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads}): each head gets hidden / heads dimensions")
        return self


class SlateConfig(_Strict):
    """Exposure-controlled evaluation (:mod:`conrec.eval.candidates`): rank the true next dislike among
    items shown the same day."""

    enabled: bool = Field(True, description="run it when the run has data/exposures.parquet")
    n_candidates: int = Field(20, ge=2, description="slate size: one target dislike + up to n-1 non-disliked same-day exposures")
    n_bootstrap: int = Field(1000, ge=1, description="bootstrap resamples for the 95% CIs")


BASELINE_NAMES = ("popularity", "itemknn", "category", "sasrec", "ease", "taste_exposure", "swing", "content", "facet_rule")
# What eval.baselines lists unless set: every baseline but the facet rule, which needs facet columns whose values
# cause dislikes (on simulated data it is added: conrec.config.PipelineConfig._simulator_facets).
DEFAULT_BASELINES = tuple(n for n in BASELINE_NAMES if n != "facet_rule")


def _once(names: list[Any]) -> list[Any]:
    """``names`` when none repeats (a repeated one was fitted, tuned and scored twice for one report row)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{repeated} listed more than once")
    return names


class EvalConfig(_Strict):
    ks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [5, 10, 20], min_length=1, description="the top-K cut-offs every metric is reported at"
    )
    split: Literal["valid", "test"] = Field(
        "test", description="the split scored: valid while choosing settings (keeps test unseen), test for the final comparison"
    )
    baselines: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BASELINES),
        description="baselines to fit, tune and score; default every one but facet_rule (added on simulated data)",
    )
    models: list[LmName] = Field(
        default_factory=lambda: list[LmName](["sft", "grpo"]), description="LM checkpoints to evaluate (skipped if not trained)"
    )
    max_samples: int | None = Field(None, ge=1, description="cap on evaluation points (quick runs)")
    horizons: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list[float]([1, 3, 7, 14]), description="days, for the FHR-vs-N plot"
    )
    seed: int = 0
    tune: bool = Field(
        True, description="choose each baseline's settings from its grid on the valid split (never test), then refit"
    )
    tune_k: int = Field(20, ge=1, description="tuning maximises FHR@tune_k on the valid samples")
    tune_budget: int = Field(
        6, ge=1, description="most grid points any evaluated baseline may try when eval.tune is on (the same budget for all)"
    )
    max_dense_items: int = Field(
        20_000,
        ge=1,
        description="baselines that need a dense n_items x n_items matrix (EASE) are skipped, with a note, on larger "
        "catalogues (20,000 items: about 3.3 GB and 3 to 6 minutes per fit on 2 cores; memory and time grow as n^2 "
        "and n^3), and on any catalogue whose memory estimate exceeds 80% of the memory available",
    )
    context_swap: bool = Field(
        False, description="also rank every point with another evaluated user's history (a seeded derangement)"
    )
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)
    popularity: PopularityConfig = Field(default_factory=PopularityConfig)
    ease: EaseConfig = Field(default_factory=EaseConfig)
    taste_exposure: TasteExposureConfig = Field(default_factory=TasteExposureConfig)
    itemknn: ItemKnnConfig = Field(default_factory=ItemKnnConfig)
    category: CategoryConfig = Field(default_factory=CategoryConfig)
    sasrec: SasrecConfig = Field(default_factory=SasrecConfig)
    swing: SwingBaselineConfig = Field(default_factory=SwingBaselineConfig)
    content: ContentConfig = Field(default_factory=ContentConfig)
    facet_rule: FacetRuleConfig = Field(default_factory=FacetRuleConfig)
    slates: SlateConfig = Field(default_factory=SlateConfig)

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BASELINE_NAMES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known baselines are {', '.join(BASELINE_NAMES)}")
        return _once(names)

    @field_validator("models")
    @classmethod
    def _models_once(cls, names: list[LmName]) -> list[LmName]:
        return _once(names)

    @model_validator(mode="after")
    def _same_budget(self) -> EvalConfig:
        return self.check_budget()

    def check_budget(self) -> EvalConfig:
        """Self, when no grid that will be tried exceeds ``tune_budget``. Only those of ``baselines``, and only with
        ``tune`` on: checking all nine meant rewriting every unused grid to lower the budget, and refused a config
        that tunes nothing. A caller that adds a baseline to a copy (which pydantic does not validate) calls it again."""
        if not self.tune:
            return self
        for name in self.baselines:
            n = len(getattr(self, name).grid_points())
            if n > self.tune_budget:
                raise ValueError(
                    f"eval.{name}.grid has {n} combinations, over eval.tune_budget={self.tune_budget} "
                    f"(every baseline gets the same tuning budget): cut eval.{name}.grid to at most {self.tune_budget} "
                    "combinations, or raise eval.tune_budget for every baseline"
                )
        return self
