"""Make item <-> SID a bijection.

Quantizers map similar items to the same full code. The LLM must be able to name every item, so:

1. **Re-assignment on the last level.** Items are grouped by their prefix (all codes but the
   last). In a group where several items share a last code, the item nearest to that codeword keeps
   it; the others move to the *free* last-level codes of the same prefix (codes no item of the
   group uses), by an optimal assignment (``scipy.optimize.linear_sum_assignment``) on the squared
   distance between each moved item's last-level residual and each free codeword. Items that did
   not collide never move, and the prefix (the coarse semantics) of every item is kept.
2. **Extra disambiguation level, only if needed.** A prefix with more items than last-level codes
   cannot be fixed by re-assignment. Then one extra level is appended to *every* code: in such a
   group the items are spread over all last-level codes with capacity ``ceil(g / K)`` each (again an
   optimal assignment, against the codewords repeated ``capacity`` times) and the extra code is the
   slot within the codeword, ordered by distance; all other items get extra code 0. The extra
   level's codebook size is the largest capacity used.

Ties are broken by item order, so the result is deterministic for fixed inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class Resolution:
    codes: np.ndarray  # (n_items, L) or (n_items, L + 1) when an extra level was needed
    codebook_sizes: list[int]
    moved: int  # items whose last-level code changed
    extra_level: bool
    extra_coded: int = 0  # items given a non-zero code on the extra level (0 without one)
    recoded: int = 0  # items whose SID is not the quantizer's code: last level moved, or a non-zero extra code


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]


def resolve_collisions(
    codes: np.ndarray, codebook_sizes: list[int], last_residual: np.ndarray, last_codebook: np.ndarray
) -> Resolution:
    """Return collision-free codes (see the module docstring for the rule)."""
    original = np.asarray(codes, dtype=np.int64)
    codes = original.copy()
    n, levels = codes.shape
    k = int(codebook_sizes[-1])
    if last_codebook.shape[0] != k:
        raise ValueError(f"last codebook has {last_codebook.shape[0]} codes but codebook_sizes[-1] = {k}")
    extra = np.zeros(n, dtype=np.int64)
    moved = 0
    # prefix group of every item (a single group when there is only one level)
    if levels > 1:
        _, group = np.unique(codes[:, :-1], axis=0, return_inverse=True)
        group = group.reshape(-1)
    else:
        group = np.zeros(n, dtype=np.int64)
    _, full_inv, full_counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    colliding_groups = np.unique(group[full_counts[full_inv.reshape(-1)] > 1])
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(group.max() + 2))
    max_capacity = 1
    for g in colliding_groups:
        members = order[bounds[g] : bounds[g + 1]]  # ascending item order
        dist = _sq_dist(last_residual[members], last_codebook)
        if len(members) <= k:
            moved += _reassign_within(codes, members, dist)
        else:
            capacity = math.ceil(len(members) / k)
            max_capacity = max(max_capacity, capacity)
            before = codes[members, -1].copy()
            slots = np.repeat(np.arange(k), capacity)  # slot j -> codeword slots[j]
            rows, cols = linear_sum_assignment(dist[:, slots])
            new_code = slots[cols]
            codes[members[rows], -1] = new_code
            moved += int((codes[members, -1] != before).sum())
            # extra code: rank within the codeword by distance (ties by item order)
            for code in np.unique(new_code):
                ms = members[rows][new_code == code]
                d = dist[np.searchsorted(members, ms), code]
                extra[ms[np.lexsort((ms, d))]] = np.arange(len(ms))
    sizes = [int(s) for s in codebook_sizes]
    if max_capacity > 1:
        codes = np.concatenate([codes, extra[:, None]], axis=1)
        sizes.append(max_capacity)
    recoded = int(((codes[:, :levels] != original).any(axis=1) | (extra != 0)).sum())
    return Resolution(codes=codes, codebook_sizes=sizes, moved=moved, extra_level=max_capacity > 1,
                      extra_coded=int((extra != 0).sum()), recoded=recoded)


def _reassign_within(codes: np.ndarray, members: np.ndarray, dist: np.ndarray) -> int:
    """Keep the nearest item on each contested code; move the others to free codes optimally."""
    last = codes[members, -1]
    keep = np.ones(len(members), dtype=bool)
    for code in np.unique(last):
        idx = np.flatnonzero(last == code)
        if len(idx) > 1:
            winner = idx[np.lexsort((idx, dist[idx, code]))[0]]
            keep[idx[idx != winner]] = False
    losers = np.flatnonzero(~keep)
    free = np.setdiff1d(np.arange(dist.shape[1]), last[keep])
    rows, cols = linear_sum_assignment(dist[np.ix_(losers, free)])
    codes[members[losers[rows]], -1] = free[cols]
    return len(losers)
