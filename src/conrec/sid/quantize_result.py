"""What every quantizer returns, and the codebook-size rule shared by both quantizers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class QuantizeResult:
    """Codes of every item plus what collision resolution needs.

    ``last_residual`` is the vector each item's *last* level quantized (the input space of the last
    codebook) and ``last_codebook`` that codebook: collision resolution re-assigns colliding items
    to the free last-level codes nearest to their residual.
    """

    codes: np.ndarray  # (n_items, levels) int64
    codebook_sizes: list[int]
    last_residual: np.ndarray  # (n_items, d)
    last_codebook: np.ndarray  # (codebook_sizes[-1], d)
    recon_mse: float  # mean over items of ||x - x_hat||^2, in the input space
    recon_rel: float  # recon_mse / mean ||x - mean(x)||^2 (0 = perfect, 1 = as bad as the mean)
    state: dict[str, Any] = field(default_factory=dict)  # what quantizer.pt stores
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch training losses


def reconstruction_errors(x: np.ndarray, x_hat: np.ndarray) -> tuple[float, float]:
    """(mean squared error, relative error: the MSE over the vectors' variance, 0 = perfect, 1 = as bad
    as the mean). NaN when the vectors do not vary beyond float noise (one item, identical texts):
    dividing by that noise gave 1e14."""
    mse = float(((x - x_hat) ** 2).sum(axis=1).mean())
    var = float(((x - x.mean(axis=0, keepdims=True)) ** 2).sum(axis=1).mean())
    scale = float((np.asarray(x, dtype=np.float64) ** 2).sum(axis=1).mean())
    return mse, (mse / var if var > 1e-9 * scale and var > 0 else float("nan"))


def effective_codebook_sizes(n_items: int, requested: Sequence[int], auto_scale: bool = True) -> list[int]:
    """Codebook sizes actually used for ``n_items`` items.

    Rule (auto_scale): every level is capped at ``max(8, next_pow2(ceil(2 * n_items ** (1/L))))``.
    Why: ``n ** (1/L)`` codes per level is what a perfectly balanced L-level tree needs to give
    every item its own code; twice that leaves room for uneven clusters, and 8 keeps tiny
    catalogues usable. Larger codebooks on a small catalogue only add LLM tokens that are never
    trained (and codes that k-means cannot even initialise). E.g. 1,682 items, L=3 -> 32 per level;
    100,000 -> 128; 1,000,000 -> 256. A warning says when sizes were reduced.
    """
    sizes = [int(s) for s in requested]
    if not auto_scale or n_items <= 0:
        return sizes
    levels = len(sizes)
    cap = max(8, 1 << max(0, math.ceil(math.log2(math.ceil(2 * n_items ** (1.0 / levels))))))
    scaled = [min(s, cap) for s in sizes]
    if scaled != sizes:
        warnings.warn(
            f"{n_items} items: codebook sizes reduced from {sizes} to {scaled} "
            f"(cap max(8, next_pow2(2 * n ** (1/{levels})))); set sid.quantizer.auto_scale=false to keep them",
            stacklevel=2,
        )
    return scaled
