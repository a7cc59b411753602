"""Configuration of the HTTP service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    model: Literal["grpo", "sft"] = "grpo"
    max_k: int = Field(50, ge=1)
    max_history: int = Field(500, ge=1, description="longer histories are rejected with 413")
    max_batch: int = Field(64, ge=1)
