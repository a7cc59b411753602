"""The item's category as the first SID level (``sid.category_level``).

Why: a text encoder and a residual quantiser group items by whatever dominates their text, so a
category is spread over several first-level codes, and a model that must learn "this user dislikes
thrillers" from a dozen dislikes has to discover the grouping first. Prefixing the category makes
it one explicit token of every SID: in a history the user's disliked categories are tokens the
model can copy, and the first generated token chooses a category, as the category and
taste x exposure baselines do with the same column. The quantised codes stay unique, so the
prefixed SIDs are collision-free too.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from conrec.errors import StageInputError

NO_CATEGORY = "(none)"
SEPARATOR = "|"  # as eval.category.separator's default: the baselines split 'Action|Comedy' on it


def first_category(raw: object) -> str:
    """The category an item's SID starts with: the first value of a multi-valued cell (split on ``|``
    and trimmed, as the category baselines read it), ``(none)`` for a missing or blank one.

    Why not the whole string: ``Action|Comedy``, ``Comedy `` and ``Comedy`` were three level-0 codes,
    where the baselines see the facets Action and Comedy."""
    parts = [p.strip() for p in ("" if raw is None else str(raw)).split(SEPARATOR)]
    return next((p for p in parts if p), NO_CATEGORY)


def no_category_message(n_items: int) -> str:
    """The refusal when ``sid.category_level`` is on and no item has a category.

    Why a refusal: the data stage writes ``category`` = '' when the items file has none (or there is no items
    file), so every item got the one ``(none)`` code and the setting only added a constant token to every SID."""
    return (
        f"sid.category_level: none of the {n_items:,} items has a category (data/items.parquet's category column is "
        "empty); map an items-file column to it (conrec init --category-col NAME, or data.columns {NAME: category}) "
        "or set sid.category_level: false"
    )


def category_codes(items: pl.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(category code per item row, the categories in code order: sorted, missing ones as ``(none)``).

    Raises :class:`StageInputError` when there is no category column or no item has a category."""
    if "category" not in items.columns:
        raise StageInputError("sid.category_level needs a category column in the items table (data/items.parquet)")
    names = [first_category(c) for c in items["category"].to_list()]
    if names and all(n == NO_CATEGORY for n in names):
        raise StageInputError(no_category_message(len(names)))
    order = sorted(set(names))
    index = {c: i for i, c in enumerate(order)}
    return np.array([index[c] for c in names], dtype=np.int64), order


def with_category_level(codes: np.ndarray, sizes: list[int], categories: tuple[np.ndarray, list[str]]) -> tuple[np.ndarray, list[int]]:
    """The SID codes with the category codes (:func:`category_codes`) prepended as level 0, and their
    codebook sizes (pure)."""
    cat, order = categories
    if len(cat) != len(codes):
        raise ValueError(f"{len(cat)} item rows but {len(codes)} SID codes")
    return np.concatenate([cat[:, None], np.asarray(codes, dtype=np.int64)], axis=1), [len(order), *sizes]
