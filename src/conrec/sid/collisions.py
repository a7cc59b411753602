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
   level's codebook size is the largest capacity used. That assignment costs about g^3 time and g^2 memory
   (12,000 items sharing one vector, e.g. blank texts, took 100 s and 2.3 GB), so the path is chosen by cost: a group
   of up to :data:`SMALL_GROUP_ITEMS` items always takes it; a larger one is reduced to its distinct residuals first
   (:func:`_spread_large`): identical items are interchangeable, and the optimal plan of how many of each go to each
   codeword is a transportation problem, solved while it has at most :data:`TRANSPORT_MAX_PAIRS` residual x codeword
   pairs. A group with more distinct residuals than that still takes the item-level assignment while it has at most
   :data:`EXACT_MAX_ITEMS` items; only a group past both bounds is spread greedily (nearest codeword with room first),
   and the stage notes it.

Ties are broken by item order (in a transportation plan, by the solver's deterministic choice), so the result is
deterministic for fixed inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment, linprog

SMALL_GROUP_ITEMS = 2048
"""An overflowing prefix group of up to this many items is always spread by the item-level optimal assignment (1 to
1.5 s at this size), so it gets the codes it got before large groups were reduced: a map whose overflowing groups are all
this small did not change (the demo's has none at all)."""

TRANSPORT_MAX_PAIRS = 2**18
"""The most distinct-residual x codeword pairs of a larger group solved as a transportation problem: 1,024 distinct
residuals x 256 codewords took 5.3 s (512 x 256: 1.7 s) on a 2-core machine shared with other work."""

EXACT_MAX_ITEMS = 3500
"""The largest group that, with too many distinct residuals for the transportation problem, is still spread by the
item-level optimal assignment: 5.1 s at this size with 256 codewords (3,000 items: 3.8 s; 4,096: 11 s) on the same
machine. A group past both bounds is spread greedily."""

SAME_ROW_TOL = 1e-5
"""Residual rows this close in every coordinate (relative to the group's largest absolute value, at least 1) count as
one vector when a large group is reduced (:func:`_same_rows`). In the demo's text vectors, the 18 pairs of items with
one title differ by at most 1.0e-7 in any coordinate (encoded in different batches), any two other items by 0.07 or
more."""

PROJECTION_SEED = 0
"""Seed of the fixed direction :func:`_same_rows` sorts rows along to find candidates (:func:`_candidate_windows`)."""


@dataclass
class Resolution:
    codes: np.ndarray  # (n_items, L) or (n_items, L + 1) when an extra level was needed
    codebook_sizes: list[int]
    moved: int  # items whose last-level code changed
    extra_level: bool
    extra_coded: int = 0  # items given a non-zero code on the extra level (0 without one)
    recoded: int = 0  # items whose SID is not the quantizer's code: last level moved, or a non-zero extra code
    greedy_items: int = 0  # items of groups too large and varied for an optimal spread (_spread_large), spread greedily


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
    greedy = 0
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
            if len(members) <= SMALL_GROUP_ITEMS:
                new_code = _optimal_spread(dist, capacity)
            else:
                new_code, was_greedy = _spread_large(last_residual[members], last_codebook, capacity, dist)
                greedy += len(members) if was_greedy else 0
            codes[members, -1] = new_code
            moved += int((codes[members, -1] != before).sum())
            # extra code: rank within the codeword by distance (ties by item order)
            for code in np.unique(new_code):
                ms = members[new_code == code]
                d = dist[np.searchsorted(members, ms), code]
                extra[ms[np.lexsort((ms, d))]] = np.arange(len(ms))
    sizes = [int(s) for s in codebook_sizes]
    if max_capacity > 1:
        codes = np.concatenate([codes, extra[:, None]], axis=1)
        sizes.append(max_capacity)
    recoded = int(((codes[:, :levels] != original).any(axis=1) | (extra != 0)).sum())
    return Resolution(codes=codes, codebook_sizes=sizes, moved=moved, extra_level=max_capacity > 1,
                      extra_coded=int((extra != 0).sum()), recoded=recoded, greedy_items=greedy)


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


def _optimal_spread(dist: np.ndarray, capacity: int) -> np.ndarray:
    """The last-level code of each row of ``dist`` (group items x codewords): the assignment of least total squared
    distance with at most ``capacity`` items per codeword (the codewords repeated ``capacity`` times)."""
    slots = np.repeat(np.arange(dist.shape[1]), capacity)  # slot j -> codeword slots[j]
    rows, cols = linear_sum_assignment(dist[:, slots])
    new_code = np.empty(dist.shape[0], dtype=np.int64)
    new_code[rows] = slots[cols]
    return new_code


def _spread_large(
    residual: np.ndarray, codebook: np.ndarray, capacity: int, item_dist: np.ndarray
) -> tuple[np.ndarray, bool]:
    """:func:`_optimal_spread` for a group of more than :data:`SMALL_GROUP_ITEMS` items, by an optimal path while one is
    affordable; also whether the answer is greedy rather than optimal. ``item_dist``: the items' distances to
    the codewords (for the item-level fallback).

    Items with identical residuals (one shared vector: blank or identical texts) are interchangeable, so the group is
    reduced to its distinct rows with multiplicities; "identical" up to :data:`SAME_ROW_TOL` (:func:`_same_rows`), and
    a row's distances are its first item's. With at most :data:`TRANSPORT_MAX_PAIRS` row x codeword pairs,
    how many copies of each row go to each codeword is the optimal transportation plan (:func:`_transport`); the
    copies of a row then take their codewords in item order, nearest codeword first. With more pairs, a group of at
    most :data:`EXACT_MAX_ITEMS` items takes the item-level assignment after all (optimal too, and cheap at that size),
    and only a larger one (a quantizer that put thousands of different items on one prefix) the greedy plan
    (:func:`_greedy_plan`).
    """
    row_of, first = _same_rows(residual)
    dist = _sq_dist(residual[first], codebook)
    copies = np.bincount(row_of, minlength=len(dist))
    plan = _transport(dist, copies, capacity) if dist.size <= TRANSPORT_MAX_PAIRS else None
    greedy = False
    if plan is None:
        if len(residual) <= EXACT_MAX_ITEMS:
            return _optimal_spread(item_dist, capacity), False
        plan, greedy = _greedy_plan(dist, copies, capacity), True
    per_row = []
    for r in range(len(dist)):
        used = np.flatnonzero(plan[r])
        used = used[np.lexsort((used, dist[r, used]))]  # nearest codeword first, ties by codeword
        per_row.append(np.repeat(used, plan[r, used]))
    new_code = np.empty(len(residual), dtype=np.int64)
    new_code[np.argsort(row_of, kind="stable")] = np.concatenate(per_row)  # items by distinct row, item order within
    return new_code, greedy


def _same_rows(residual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's class of equal rows, numbered by first appearance, and each class's first row: rows equal up to
    :data:`SAME_ROW_TOL` times the largest absolute value (at least 1) in every coordinate share a class.

    Why a tolerance: the encoder embeds every item text in batches, and one text in two batches can come out ~1e-7
    apart, so exact equality would count such items as different vectors. Why not rounding: in hundreds of
    dimensions some coordinate of two such rows nearly always straddles a rounding boundary. Instead, exactly equal
    rows are merged first (``np.unique``); then, in order of first appearance, each row not yet taken takes every
    later untaken row within the tolerance of it, so every row is within the tolerance of its class's first row.
    Candidates come from a window on a fixed random projection (:func:`_candidate_windows`), so distinct rows cost a
    sort, not pairs.
    """
    distinct, first, inverse = np.unique(residual, axis=0, return_index=True, return_inverse=True)
    by_first = np.argsort(first, kind="stable")  # distinct rows in order of their first item
    rank = np.empty_like(by_first)
    rank[by_first] = np.arange(len(by_first))
    rows = distinct[by_first].astype(np.float64)
    tol = SAME_ROW_TOL * max(1.0, float(np.abs(rows).max(initial=0.0)))
    order, lo, hi = _candidate_windows(rows, tol)
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    leader = np.full(len(rows), -1, dtype=np.int64)
    for r in range(len(rows)):
        if leader[r] >= 0:
            continue
        leader[r] = r
        if hi[pos[r]] - lo[pos[r]] > 1:
            window = order[lo[pos[r]] : hi[pos[r]]]
            window = window[leader[window] < 0]
            leader[window[np.abs(rows[window] - rows[r]).max(axis=1) <= tol]] = r
    leaders, cls = np.unique(leader, return_inverse=True)  # leaders ascend = classes by first appearance
    return cls.reshape(-1)[rank[inverse.reshape(-1)]], first[by_first][leaders]


def _candidate_windows(rows: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by a key (``order``) and, for the row at each sorted position, the sorted positions
    ``[lo, hi)`` of every row whose key is close enough that the two rows may be within ``tol`` in every coordinate:
    a superset of each row's tolerance neighbours, so that :func:`_same_rows` compares a row with its window only.

    The key is the rows' projection on a fixed unit vector drawn with :data:`PROJECTION_SEED` (the same for every
    group, so the result is deterministic): rows within ``tol`` in every coordinate have keys at most ``tol`` times the
    vector's L1 norm apart (plus float rounding, allowed for). Why not one coordinate, the one of widest spread, as
    before: when most rows share a value there and a few outliers set the spread (blank texts' text part beside their
    own collaborative part, under rkmeans with concat fusion), every window held nearly the whole group, and 16,000
    such items took 21 s of pair comparisons. Distinct rows differ in some coordinate, hence almost surely in a random
    projection, so windows hold only rows that are near in every direction at once."""
    dim = rows.shape[1]
    direction = np.random.default_rng(PROJECTION_SEED).normal(size=dim)
    direction /= float(np.linalg.norm(direction)) or 1.0
    key = rows @ direction
    scale = float(np.abs(rows).max(initial=0.0))
    # |key_a - key_b| <= sum |w_i| |a_i - b_i| <= tol ||w||_1; each computed key is off by at most ~dim eps scale ||w||_1
    half = float(np.abs(direction).sum()) * (tol * (1 + 1e-9) + 4 * (dim + 2) * np.finfo(np.float64).eps * scale)
    order = np.argsort(key, kind="stable")
    lo = np.searchsorted(key[order], key[order] - half, side="left")
    hi = np.searchsorted(key[order], key[order] + half, side="right")
    return order, lo, hi


def _transport(dist: np.ndarray, copies: np.ndarray, capacity: int) -> np.ndarray | None:
    """How many of each row's ``copies`` go to each codeword (rows x codewords): least total squared distance with at
    most ``capacity`` per codeword. A transportation problem; its dual-simplex solution is a vertex, hence integral
    (the constraint matrix is totally unimodular). None when the solver fails or its plan is not integral after all:
    the caller then spreads greedily, which is always possible."""
    u, k = dist.shape
    result = linprog(
        dist.ravel(),
        A_ub=sp.kron(np.ones((1, u)), sp.eye(k), format="csr"),  # per codeword: at most capacity
        b_ub=np.full(k, capacity),
        A_eq=sp.kron(sp.eye(u), np.ones((1, k)), format="csr"),  # per row: all its copies
        b_eq=copies,
        bounds=(0, None),
        method="highs-ds",
    )
    if result.status != 0 or result.x is None:
        return None
    plan = np.rint(result.x).astype(np.int64).reshape(u, k)
    if not np.array_equal(plan.sum(1), copies) or plan.sum(0).max() > capacity:
        return None
    return plan


def _greedy_plan(dist: np.ndarray, copies: np.ndarray, capacity: int) -> np.ndarray:
    """:func:`_transport`'s plan, greedily: (row, codeword) pairs in order of distance (ties by row, then codeword),
    each giving the row's unplaced copies to the codeword while it has room. Sorting u x k pairs, not solving."""
    u, k = dist.shape
    plan = np.zeros((u, k), dtype=np.int64)
    left, room = copies.astype(np.int64), np.full(k, capacity, dtype=np.int64)
    r_idx, c_idx = np.divmod(np.arange(dist.size), k)
    todo = int(left.sum())
    for pair in np.lexsort((c_idx, r_idx, dist.reshape(-1))):
        r, c = int(r_idx[pair]), int(c_idx[pair])
        if n := min(int(left[r]), int(room[c])):
            plan[r, c], left[r], room[c], todo = n, left[r] - n, room[c] - n, todo - n
            if not todo:
                break
    return plan
