"""Quality measures of a semantic-ID assignment (pure functions on code arrays).

Why these: a good SID uses its codebooks (utilisation, perplexity: collapsed codebooks waste LLM
vocabulary and make prefixes uninformative), keeps items apart (collision rate: shared full codes
must be resolved afterwards, which adds arbitrary, meaningless code choices), and is *semantic*
(purity lift: items sharing a first-level code should be alike more often than random pairs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


def codebook_usage(codes: np.ndarray, codebook_sizes: Sequence[int]) -> list[dict[str, float]]:
    """Per level: share of the codebook that is used and the perplexity of the code distribution.

    Perplexity ``exp(H)`` is the "effective number of codes": equal to the codebook size when the
    codes are uniform, 1 when everything maps to one code.
    """
    out = []
    for level, size in enumerate(codebook_sizes):
        counts = np.bincount(codes[:, level], minlength=int(size)).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        out.append(
            {
                "size": int(size),
                "used": int((counts > 0).sum()),
                "used_share": float((counts > 0).sum() / size),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())),
            }
        )
    return out


def collision_rate(codes: np.ndarray) -> float:
    """Share of items whose full code is shared with at least one other item."""
    if len(codes) == 0:
        return 0.0
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return float((counts[inverse.reshape(-1)] > 1).mean())


def max_items_per_code(codes: np.ndarray) -> int:
    """Largest number of items that share one full code (1 = collision-free)."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    return int(counts.max()) if len(counts) else 0


def purity_lift(codes_level0: Sequence[int] | np.ndarray, categories: Sequence[Hashable | None]) -> float:
    """P(same category | same first-level code) / P(same category | random pair).

    Computed exactly from counts over all unordered pairs. Items with an empty or missing category
    are left out. Returns ``nan`` when either probability is undefined (e.g. no two items share a
    code) or the random-pair probability is zero; :func:`purity_lift_undefined` says which. 1.0
    means the first level carries no category information; larger is better.
    """
    return _purity(codes_level0, categories)[0]


def purity_lift_undefined(codes_level0: Sequence[int] | np.ndarray, categories: Sequence[Hashable | None]) -> str | None:
    """Why :func:`purity_lift` is ``nan`` (None when it is a number), in words for the stage's summary.

    Why: one message, "no categories to compare", was printed for every cause, also when all 3,000 items had a
    category but no two shared one."""
    return _purity(codes_level0, categories)[1]


def _purity(codes_level0: Sequence[int] | np.ndarray, categories: Sequence[Hashable | None]) -> tuple[float, str | None]:
    """(purity lift, why it is undefined or None): the one computation behind both public functions."""
    codes = np.asarray(codes_level0)
    if len(codes) != len(categories):
        raise ValueError(f"{len(codes)} codes but {len(categories)} categories")
    keep = [i for i, c in enumerate(categories) if c is not None and c != ""]
    if not keep:
        return float("nan"), "no categories to compare"
    if len(keep) < 2:
        return float("nan"), "only one item has a category"
    cats = [categories[i] for i in keep]
    codes = codes[keep]

    def pairs(n: np.ndarray | float) -> Any:
        return n * (n - 1) / 2

    cat_counts = np.array(list(Counter(cats).values()), dtype=np.float64)
    p_random = pairs(cat_counts).sum() / pairs(float(len(cats)))
    code_counts = np.array(list(Counter(codes.tolist()).values()), dtype=np.float64)
    joint_counts = np.array(list(Counter(zip(codes.tolist(), cats)).values()), dtype=np.float64)
    same_code_pairs = pairs(code_counts).sum()
    if p_random == 0:
        return float("nan"), "no two items share a category"
    if same_code_pairs == 0:
        return float("nan"), "no two items with a category share a level-0 code"
    p_same = pairs(joint_counts).sum() / same_code_pairs
    return float(p_same / p_random), None
