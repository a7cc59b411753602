"""The SID quantisers, by ``sid.quantizer.kind``: how each fits item vectors to codes, and how a stored state
turns codes back into vectors (the GRPO similarity reward, :mod:`conrec.llm.training.item_vectors`).

Why one mapping: the sid stage ran RQ-VAE for any kind but ``rkmeans``, chose its threads by ``kind == "rqvae"``,
and the reward's reconstruction dispatched by kind on its own, so a kind added to the config without code
trained an RQ-VAE in its name and failed only at GRPO time. :data:`QUANTIZERS` is checked at import against the
config's type, and :func:`quantizer` refuses a kind it lacks. Fit and reconstruction import their libraries when
called, so reading this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, get_args

import numpy as np

from conrec.sid.config import QuantizerConfig, QuantizerKind

if TYPE_CHECKING:
    from rich.progress import Progress

    from conrec.sid.quantize_result import QuantizeResult


class Quantizer(NamedTuple):
    """One ``sid.quantizer.kind``: its fit, its reconstruction and its threads."""

    fit: Callable[[np.ndarray, list[int], QuantizerConfig, int, Progress | None], QuantizeResult]
    """(item vectors, codebook sizes, settings, seed, progress) -> the codes and the state ``quantizer.pt`` stores."""
    reconstruct: Callable[[dict[str, Any], np.ndarray], np.ndarray]
    """(a stored state, codes (n, levels)) -> the input-space vectors the codes decode to."""
    trains_with_torch: bool
    """Fits by training with torch, on ``sid.quantizer.train_threads`` threads (else on the stage's own count)."""


def _fit_rqvae(vectors: np.ndarray, sizes: list[int], cfg: QuantizerConfig, seed: int, progress: Progress | None) -> QuantizeResult:
    from conrec.sid.rqvae import fit_rqvae

    return fit_rqvae(vectors, sizes, cfg, seed=seed, progress=progress)[1]


def _fit_rkmeans(vectors: np.ndarray, sizes: list[int], cfg: QuantizerConfig, seed: int, progress: Progress | None) -> QuantizeResult:
    from conrec.sid.rkmeans import fit_rkmeans

    return fit_rkmeans(vectors, sizes, seed=seed, niter=cfg.kmeans_iters, progress=progress)


def _reconstruct_rqvae(state: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    import torch

    from conrec.sid.rqvae import load_rqvae

    model = load_rqvae(state)
    levels = min(len(model.codebooks), codes.shape[1])
    with torch.no_grad():
        z_q = sum(model.codebooks[lv][torch.from_numpy(codes[:, lv])] for lv in range(levels))
        return model.decoder(z_q).numpy().astype(np.float32)


def _reconstruct_rkmeans(state: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    books = [np.asarray(b, dtype=np.float32) for b in state["codebooks"]]
    levels = min(len(books), codes.shape[1])
    return np.sum([books[lv][codes[:, lv]] for lv in range(levels)], axis=0).astype(np.float32)


QUANTIZERS: dict[str, Quantizer] = {
    "rqvae": Quantizer(_fit_rqvae, _reconstruct_rqvae, trains_with_torch=True),
    "rkmeans": Quantizer(_fit_rkmeans, _reconstruct_rkmeans, trains_with_torch=False),
}
if set(QUANTIZERS) != set(get_args(QuantizerKind)):  # a raise, not an assert: python -O strips those
    raise RuntimeError(
        f"conrec.sid.quantizers.QUANTIZERS must have an entry for each sid.quantizer.kind: missing "
        f"{sorted(set(get_args(QuantizerKind)) - set(QUANTIZERS))}, not a kind: {sorted(set(QUANTIZERS) - set(get_args(QuantizerKind)))}"
    )


def quantizer(kind: str) -> Quantizer:
    """The quantiser of ``kind``; an error for a kind with none (a config built without validation, or a kind
    added to the config's type and not here) rather than another quantiser fitted in its name."""
    if (q := QUANTIZERS.get(kind)) is None:
        raise ValueError(f"sid.quantizer.kind: no quantizer {kind!r} (known: {', '.join(QUANTIZERS)})")
    return q
