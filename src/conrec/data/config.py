"""Configuration of the data stage: where events come from, and how they are split and labelled."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SimulatorConfig(_Strict):
    """Seeded simulator with exposure bias (see conrec.data.simulator)."""

    n_users: int = Field(300, ge=2)
    n_items: int = Field(800, ge=10)
    n_categories: int = Field(12, ge=2)
    days: int = Field(60, ge=2)
    events_per_user_per_day: float = Field(6.0, gt=0)
    dislike_facets_per_user: int = Field(2, ge=1)
    seed: int = 0


class SplitConfig(_Strict):
    """Global time split and future-window labels.

    The valid/test cut-offs are placed at event-time quantiles so that roughly ``valid_frac`` and
    ``test_frac`` of all events fall after them.
    """

    valid_frac: float = Field(0.1, ge=0.0, lt=1.0)
    test_frac: float = Field(0.1, gt=0.0, lt=1.0)
    horizon_days: float = Field(7.0, gt=0, description="N: the future-negative window length in days")
    max_horizon_days: float = Field(30.0, gt=0, description="negatives kept per sample for horizon studies")
    max_history: int = Field(200, ge=1, description="most recent events kept per sample")
    max_train_samples_per_user: int = Field(20, ge=1)
    min_history: int = Field(1, ge=0, description="evaluation points need at least this many prior events")

    @model_validator(mode="after")
    def _fractions(self) -> "SplitConfig":
        if self.valid_frac + self.test_frac >= 1.0:
            raise ValueError("valid_frac + test_frac must be < 1 (something must be left to train on)")
        if self.max_horizon_days < self.horizon_days:
            raise ValueError("max_horizon_days must be >= horizon_days")
        return self


class DataConfig(_Strict):
    source: Literal["movielens100k", "simulator", "table", "movielens", "kuairand", "amazon"] = "movielens100k"
    events_path: Path | None = Field(None, description="events/ratings/log/reviews file for file-based sources")
    items_path: Path | None = Field(None, description="item metadata file for file-based sources")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="source column -> canonical column, for source=table (CSV or Parquet)",
    )
    dislike_max_rating: float = Field(2.0, description="rating <= this is a dislike (MovieLens, Amazon)")
    like_min_rating: float = Field(4.0, description="rating >= this is a positive (MovieLens, Amazon)")
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
