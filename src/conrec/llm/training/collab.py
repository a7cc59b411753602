"""Item-item co-dislike similarity: the collaborative part of the future-negative reward.

Why: the future-negative set of a user is a small, noisy sample of what they dislike. An item that
users tend to dislike together with the items in that set is a plausible dislike too, so
the GRPO reward gives it partial credit (CoNRec "extended with collaborative signals").

How: a binary user x item matrix of dislikes, item-item cosine similarity
``|U_i & U_j| / sqrt(|U_i| |U_j|)`` via one sparse product, pruned to the top-N neighbours per item.
What it is fitted on is the caller's choice: the GRPO stage passes the run's training events, the
baselines' fit events (:mod:`conrec.data.fit_events`: every event before the ``train_until`` split's
cut-off, or each user's own events before that user's start of it), so no valid/test label leaks into
the training reward. Those events are every user's, the user of the point being rewarded included, with
that user's dislikes after the point (and after its future window) too, as the baselines are fitted; the
credit is not restricted to other users' behaviour. ``before_ts`` cuts the events further.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from conrec.data.schema import DISLIKE
from conrec.errors import DataValidationError, require_columns
from conrec.swing import top_n_rows


@dataclass(frozen=True)
class CoDislike:
    """Top-N co-dislike neighbours per item (a sparse, row-pruned cosine matrix).

    ``sim[i, j]`` is the cosine similarity of items ``i`` and ``j`` if ``j`` is among the top-N
    neighbours of ``i`` (else 0); the diagonal is 1 for every known item (an item is maximally
    similar to itself, so an exact hit also earns full collaborative credit).
    """

    item_index: dict[str, int]
    sim: sp.csr_matrix

    @classmethod
    def fit(
        cls,
        events: pl.DataFrame,
        top_n: int = 50,
        before_ts: int | None = None,
        items: Sequence[str] | None = None,
    ) -> CoDislike:
        """Fit on the dislikes of ``events`` with ``ts < before_ts`` (all events if ``None``).

        ``items`` fixes the index (e.g. every catalogue item, so items never disliked in training
        still resolve, with zero similarity to everything but themselves); default: items seen in
        ``events``.
        """
        require_columns(events, ("user_id", "item_id", "feedback"), "co-dislike fit: events")
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {top_n}")
        dislikes = events.filter(pl.col("feedback") == DISLIKE)
        if before_ts is not None:
            if "ts" not in events.columns:
                raise DataValidationError("co-dislike fit: before_ts given but events have no 'ts' column")
            dislikes = dislikes.filter(pl.col("ts") < before_ts)
        dislikes = dislikes.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String)).unique()

        if items is None:
            all_items = sorted(set(events["item_id"].cast(pl.String).to_list()))
        else:
            all_items = [str(i) for i in items]
        item_index = {item: k for k, item in enumerate(all_items)}
        n_items = len(all_items)
        unknown = dislikes.filter(~pl.col("item_id").is_in(all_items))
        if unknown.height:
            raise DataValidationError(
                f"co-dislike fit: {unknown['item_id'].n_unique()} disliked item id(s) are not in `items`, "
                f"e.g. {unknown['item_id'].head(3).to_list()}"
            )

        users = dislikes["user_id"].to_numpy()
        _, user_rows = np.unique(users, return_inverse=True) if len(users) else (None, np.zeros(0, dtype=np.int64))
        item_cols = np.array([item_index[i] for i in dislikes["item_id"].to_list()], dtype=np.int64)
        n_users = int(user_rows.max()) + 1 if len(user_rows) else 0
        x = sp.csr_matrix(
            (np.ones(len(item_cols), dtype=np.float32), (user_rows.reshape(-1), item_cols)),
            shape=(n_users, n_items),
        )
        co = (x.T @ x).tocoo()  # item x item co-dislike counts; the diagonal is each item's count
        counts = np.asarray(x.sum(axis=0)).reshape(-1)
        off = co.row != co.col
        rows, cols = co.row[off], co.col[off]
        vals = co.data[off] / np.sqrt(counts[rows] * counts[cols])
        off_diagonal = top_n_rows(sp.coo_matrix((vals, (rows, cols)), shape=(n_items, n_items)), top_n)
        sim = (off_diagonal + sp.identity(n_items, dtype=np.float32, format="csr")).astype(np.float32).tocsr()
        return cls(item_index=item_index, sim=sim)

    def neighbours(self, item: str) -> dict[str, float]:
        """The kept neighbours of ``item`` (without itself) and their similarities."""
        k = self.item_index.get(item)
        if k is None:
            return {}
        row = self.sim.getrow(k)
        names = list(self.item_index)
        return {names[j]: float(v) for j, v in zip(row.indices, row.data) if j != k}

    def similarity_to_set(self, item: str, item_set: Sequence[str]) -> float:
        """Max similarity of ``item`` to any member of ``item_set`` (0 for an empty set or unknown item)."""
        return float(self.similarity_to_sets([item], [item_set])[0])

    def similarity_to_sets(self, items: Sequence[str | None], item_sets: Sequence[Sequence[str]]) -> np.ndarray:
        """Vectorised :meth:`similarity_to_set` for a batch: one sparse gather over all (item, member) pairs.

        ``None`` items (e.g. an unparseable completion) and unknown ids score 0.
        """
        return max_over_sets(items, item_sets, self.item_index, lambda a, b: np.asarray(self.sim[a, b]).reshape(-1))


def max_over_sets(
    items: Sequence[str | None],
    item_sets: Sequence[Sequence[str]],
    index: dict[str, int],
    pair_values: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Per row, the max of ``pair_values(item, member)`` over the members of its set (0 for an empty
    set, a ``None`` item or unknown ids; negative values count as 0).

    Vectorised: one call of ``pair_values`` on the index arrays of every known (item, member) pair,
    then a per-row maximum; shared by the co-dislike and the embedding-cosine rewards.
    """
    if len(items) != len(item_sets):
        raise ValueError(f"{len(items)} items but {len(item_sets)} item sets")
    a = np.array([index.get(i, -1) if i is not None else -1 for i in items], dtype=np.int64)
    lengths = np.array([len(s) for s in item_sets], dtype=np.int64)
    members = np.array([index.get(m, -1) for s in item_sets for m in s], dtype=np.int64)
    out = np.zeros(len(items), dtype=np.float32)
    if members.size == 0:
        return out
    rows = np.repeat(a, lengths)
    ok = (rows >= 0) & (members >= 0)
    vals = np.zeros(members.size, dtype=np.float32)
    if ok.any():
        vals[ok] = pair_values(rows[ok], members[ok])
    np.maximum.at(out, np.repeat(np.arange(len(items)), lengths), np.maximum(vals, 0.0))
    return out
