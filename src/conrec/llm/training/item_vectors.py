"""Item vectors for the similarity reward: codebook-reconstructed RQ-VAE embeddings when the run has them.

Why the *reconstructed* vectors (CoNRec computes its reward on them): the policy generates SIDs, and
two items with the same SID prefix should be judged close by construction; the vector a SID decodes
to (the sum of its codebook vectors, through the RQ-VAE decoder) is what the SID "means", so the
reward is consistent with the tokens the model actually emits, and items moved by collision
resolution are judged by the code they were given. Fallback: the encoder embeddings
(``sid/embeddings.npy``) when ``sid/quantizer.pt`` is missing or unreadable.

What ``conrec sid`` writes: ``embeddings.npy`` (the quantizer's input vectors, items order) and
``quantizer.pt`` (``{"quantizer": {"kind": "rqvae", state_dict, ...} | {"kind": "rkmeans",
"codebooks": [...]}, ...}``); the reconstruction is recomputed here from those and the SID map.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from conrec.errors import StageInputError


def reconstruct(state: dict[str, Any], codes: np.ndarray) -> np.ndarray:
    """Input-space vectors that ``codes`` (n, levels) decode to under a stored quantizer ``state``
    (its ``kind``'s reconstruction in :data:`conrec.sid.quantizers.QUANTIZERS`).

    Levels beyond the quantizer's codebooks (a disambiguation level added by collision resolution)
    carry no vector and are ignored.
    """
    from conrec.sid.quantizers import QUANTIZERS

    kind = state.get("kind")
    if not isinstance(kind, str) or kind not in QUANTIZERS:
        raise StageInputError(f"unknown quantizer kind {kind!r} in quantizer.pt")
    return QUANTIZERS[kind].reconstruct(state, np.asarray(codes, dtype=np.int64))


def normalise(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), so dot products are cosines."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def item_vectors(sid_dir: Path, codes: np.ndarray) -> tuple[np.ndarray, str]:
    """(unit-length item vectors in SID-map order, where they came from: ``reconstructed`` or ``encoder``)."""
    import torch

    sid_dir = Path(sid_dir)
    qpath = sid_dir / "quantizer.pt"
    if qpath.exists():
        stored: Any = None
        try:
            # tensors and plain values only: a run directory from elsewhere must not run code when it is read
            stored = torch.load(qpath, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" in str(exc):  # torch refused a global: an object that would run code
                raise StageInputError(
                    f"{qpath} holds objects other than tensors and plain values (refused: reading them could run code); "
                    "rerun `conrec sid` to write it again"
                ) from exc
        except Exception:  # noqa: BLE001  corrupt or not a torch file (torch raises anything, IndexError included)
            pass  # unreadable: the encoder vectors below
        if isinstance(stored, dict):
            try:
                prefix = int(stored.get("prefix_levels", 0))  # e.g. the category level, which no codebook holds
                return normalise(reconstruct(stored["quantizer"], np.asarray(codes)[:, prefix:])), "reconstructed"
            except (KeyError, RuntimeError, ValueError, TypeError, StageInputError):
                pass  # fall back to the encoder vectors below
    epath = sid_dir / "embeddings.npy"
    if not epath.exists():
        raise StageInputError(f"no item vectors for the similarity reward: neither {qpath} nor {epath} (run `conrec sid`)")
    vecs = np.load(epath)
    if len(vecs) != len(codes):
        raise StageInputError(f"{epath} has {len(vecs)} rows for {len(codes)} items in the SID map; rerun `conrec sid`")
    return normalise(vecs), "encoder"
