"""Context-swap control: does a model's ranking depend on *this* user's history?

Each evaluation point is ranked a second time with another evaluated user's history (a seeded
derangement of the ``hist_items``/``hist_feedback`` columns that never gives a point a history of
its own user) and scored against the point's *own* future set. A model that uses the context
loses FHR under the swap and changes its top-K; one that ranks by a global prior keeps both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from conrec.errors import DataValidationError
from conrec.eval.seen import SEEN_COLUMN


def cross_user_derangement(users: Sequence[str], seed: int) -> np.ndarray:
    """``perm`` with ``users[perm[i]] != users[i]`` for every i (seeded).

    Points are grouped by user (users in random order, points shuffled within), then each position
    takes the point ``m`` positions later, cyclically, where ``m`` is the largest group: a shift of
    at least a group's length leaves the group, and wrapping back into it would need ``m`` to exceed
    ``n - m``. So it exists whenever no user holds more than half of the points.
    """
    n = len(users)
    if n < 2:
        raise DataValidationError(f"context swap needs at least 2 evaluation points, got {n}")
    rng = np.random.default_rng(seed)
    codes, inverse, counts = np.unique(np.asarray(users, dtype=object), return_inverse=True, return_counts=True)
    m = int(counts.max())
    if 2 * m > n:
        raise DataValidationError(
            f"context swap: user {codes[counts.argmax()]!r} holds {m} of {n} points; no user may hold more than half"
        )
    user_rank = rng.permutation(len(codes))[inverse]
    order = np.lexsort((rng.random(n), user_rank))  # grouped by user, random within
    perm = np.empty(n, dtype=np.int64)
    perm[order] = order[(np.arange(n) + m) % n]
    return perm


def swap_histories(samples: pl.DataFrame, seed: int) -> pl.DataFrame:
    """``samples`` with each row's history replaced by another user's (all other columns kept; the items excluded
    from its top-K, :data:`~conrec.eval.seen.SEEN_COLUMN`, move with the history when present)."""
    for col in ("user_id", "hist_items", "hist_feedback"):
        if col not in samples.columns:
            raise DataValidationError(f"samples: missing column {col!r} for the context swap")
    perm = pl.Series(cross_user_derangement(samples["user_id"].to_list(), seed))
    moved = [c for c in ("hist_items", "hist_feedback", SEEN_COLUMN) if c in samples.columns]
    return samples.with_columns(samples[c].gather(perm) for c in moved)


def mean_overlap(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], k: int) -> float:
    """Mean over points of |top-k(a) & top-k(b)| / the longer of the two top-k lists (1 = the swap changed
    nothing). Not / k: a catalogue or a model returning fewer than k items read as a changed ranking (three
    identical items at k = 20 were 0.15). Points where both lists are empty are left out."""
    if len(a) != len(b):
        raise ValueError(f"rankings differ in length: {len(a)} vs {len(b)}")
    shares = [len(set(x[:k]) & set(y[:k])) / n for x, y in zip(a, b) if (n := max(len(set(x[:k])), len(set(y[:k]))))]
    return float(np.mean(shares)) if shares else float("nan")
