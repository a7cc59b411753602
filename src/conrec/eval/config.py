"""Configuration of evaluation, the baselines and the report."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemKnnConfig(_Strict):
    """Item-item cosine similarity on the user x item co-dislike matrix."""

    recency_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j (1 = plain sum)"
    )
    top_neighbours: int = Field(100, ge=1, description="similarities kept per item (sparsity and noise control)")


class CategoryConfig(_Strict):
    """"Dislike the same category again": rank categories by the user's recent dislikes."""

    recency_decay: float = Field(
        0.9, gt=0.0, le=1.0, description="weight of the j-th most recent dislike is decay**j (1 = frequency only)"
    )
    columns: list[str] = Field(
        default_factory=lambda: ["category"],
        min_length=1,
        description="item columns whose values are facets (e.g. add 'tone', 'setting' on simulated data)",
    )
    separator: str | None = Field(
        "|", description="splits multi-valued categories (e.g. 'Action|Comedy'); None keeps the string whole"
    )


class SasrecConfig(_Strict):
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
    threads: int = Field(2, ge=1, description="torch CPU threads")


class SlateConfig(_Strict):
    """Exposure-controlled evaluation (:mod:`conrec.eval.candidates`): rank the true next dislike among
    items shown the same day."""

    enabled: bool = Field(True, description="run it when the run has data/exposures.parquet")
    n_candidates: int = Field(20, ge=2, description="slate size: the true negative + up to n-1 non-disliked same-day exposures")
    n_bootstrap: int = Field(1000, ge=1, description="bootstrap resamples for the 95% CIs")


BASELINE_NAMES = ("popularity", "itemknn", "category", "sasrec")


class EvalConfig(_Strict):
    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [5, 10, 20], min_length=1)
    split: Literal["valid", "test"] = "test"
    baselines: list[str] = Field(default_factory=lambda: ["popularity", "itemknn", "category", "sasrec"])
    models: list[Literal["sft", "grpo"]] = Field(
        default_factory=lambda: ["sft", "grpo"], description="LM checkpoints to evaluate (skipped if not trained)"
    )
    max_samples: int | None = Field(None, ge=1, description="cap on evaluation points (quick runs)")
    horizons: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1, 3, 7, 14], description="days, for the FHR-vs-N plot"
    )
    seed: int = 0
    itemknn: ItemKnnConfig = Field(default_factory=ItemKnnConfig)
    category: CategoryConfig = Field(default_factory=CategoryConfig)
    sasrec: SasrecConfig = Field(default_factory=SasrecConfig)
    slates: SlateConfig = Field(default_factory=SlateConfig)

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in BASELINE_NAMES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known baselines are {', '.join(BASELINE_NAMES)}")
        return names
