"""Configuration of evaluation and the report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    split: Literal["valid", "test"] = "test"
    baselines: list[str] = Field(default_factory=lambda: ["popularity", "itemknn", "category", "sasrec"])
    models: list[str] = Field(default_factory=lambda: ["sft", "grpo"], description="LM checkpoints to evaluate")
    max_samples: int | None = Field(None, ge=1, description="cap on evaluation points (quick runs)")
    horizons: list[float] = Field(default_factory=lambda: [1, 3, 7, 14], description="days, for the FHR-vs-N plot")
    seed: int = 0
