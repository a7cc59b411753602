"""Collaborative item vectors for the SID quantizer: who interacted with an item, not what it says.

Why: SIDs quantised from text alone put items that *read* alike under one prefix; the LM then has
to learn from scratch which items the same users meet and reject. Where collaborative signal wins
(a real export on which co-dislike Swing beat every text-aware model), the SID prefixes should carry
it too (GPTRec, COSETTE: quantise content and co-interaction vectors together). The vectors are a
truncated SVD of the binary item x user matrix of training events (dislikes and positives), scaled
by the singular values' square roots, L2-normalised; items nobody interacted with get zeros (their
text part alone places them). The events are the baselines' fit events
(:func:`conrec.data.fit_events.fit_events_for`), so no evaluated label shapes an item's code.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from conrec.errors import require_columns


def interaction_matrix(events: pl.DataFrame, item_ids: list[str], feedback: str = "all") -> sp.csr_matrix:
    """Binary (n_items, n_users) matrix of the events on ``item_ids`` (``feedback``: all or dislikes)."""
    require_columns(events, ("user_id", "item_id", "feedback"), "events")
    if feedback == "dislikes":
        events = events.filter(pl.col("feedback") < 0)
    row_of = {item: r for r, item in enumerate(item_ids)}
    pairs = events.select(pl.col("item_id").cast(pl.String), pl.col("user_id").cast(pl.String)).unique()
    pairs = pairs.filter(pl.col("item_id").is_in(item_ids))
    users = sorted(set(pairs["user_id"].to_list()))
    col_of = {u: c for c, u in enumerate(users)}
    rows = np.array([row_of[i] for i in pairs["item_id"].to_list()], dtype=np.int64)
    cols = np.array([col_of[u] for u in pairs["user_id"].to_list()], dtype=np.int64)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(item_ids), max(1, len(users))))


def collaborative_vectors(matrix: sp.csr_matrix, dims: int, seed: int = 0) -> np.ndarray:
    """(n_items, d) L2-normalised ``U sqrt(S)`` of the top ``d = min(dims, rank bound)`` singular
    triplets; rows of items without interactions are zero. Signs are fixed (largest |entry| of each
    component positive) so the same data always gives the same vectors."""
    n_items, n_users = matrix.shape
    d = min(dims, min(n_items, n_users) - 1)
    out = np.zeros((n_items, max(1, dims)), dtype=np.float32)
    if d < 1 or matrix.nnz == 0:
        return out
    rng = np.random.default_rng(seed)
    u, s, _ = svds(matrix.astype(np.float64), k=d, v0=rng.standard_normal(min(n_items, n_users)))
    order = np.argsort(-s)
    u, s = u[:, order], s[order]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(d)])
    signs[signs == 0] = 1.0
    vec = (u * signs) * np.sqrt(s)
    norms = np.linalg.norm(vec, axis=1, keepdims=True)
    vec = np.divide(vec, norms, out=np.zeros_like(vec), where=norms > 0)
    out[:, :d] = vec.astype(np.float32)
    return out
