"""A log-popularity prior over items, added to the LM's scores at decoding time.

Why: in worlds where what a user dislikes is driven by what they are shown, an item's dislike
popularity alone is a strong predictor (the popularity baseline), and a small LM trained from
scratch spreads its probability thinly. ``decode.popularity_prior`` = ``w`` ranks items by
``log p(SID | prompt) + w * log prior(item)``, where ``prior`` is the smoothed share of the dislikes
in the model's *training* events (the baselines' fit events, :func:`conrec.data.fit_events.training_events`),
so no event after a point's cut-off enters it. ``w`` is a setting chosen on valid (0 = off).

Beam search prunes by prefix, so the prior must act at every level, not only on the full SID:
:class:`TriePrior` splits ``log prior(item)`` into per-level increments
``log P(prefix + code) - log P(prefix)``, with ``P(node)`` the prior mass under a trie node. They
sum over the levels to exactly ``log prior(item)``, so beam search, exhaustive search and slate
scoring all rank by the same quantity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

from conrec.sid.trie import SidTrie


def dislike_log_prior(events: pl.DataFrame, items: Sequence[str], smoothing: float = 1.0) -> torch.Tensor:
    """(n_items,) float64 ``log((dislikes(item) + smoothing) / sum)`` in ``items`` order.

    ``events`` needs ``item_id`` and ``feedback`` (-1 = dislike); items without a dislike get the
    smoothing mass only, never ``-inf``.
    """
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    counts = events.filter(pl.col("feedback") == -1).group_by(pl.col("item_id").cast(pl.String)).agg(n=pl.len())
    of = dict(zip(counts["item_id"].to_list(), counts["n"].to_list()))
    mass = np.array([of.get(str(i), 0) for i in items], dtype=np.float64) + smoothing
    return torch.from_numpy(np.log(mass / mass.sum()))


class TriePrior:
    """``weight * log prior(item)`` as per-level increments along the SID trie (module docstring)."""

    def __init__(self, trie: SidTrie, item_log_prior: torch.Tensor, weight: float) -> None:
        self.trie = trie
        self.weight = float(weight)
        self.item_log_prior = item_log_prior.double()
        self._node_log_mass = trie.node_log_sums(self.item_log_prior)

    def increments(self, prefix: torch.Tensor) -> torch.Tensor:
        """(rows, codebook_sizes[l]) float32 weighted increments for each code after each prefix
        (rows, l); 0 where the code leads nowhere (the constraint masks those anyway)."""
        parent = self.trie.node_of(prefix.cpu())
        return self.increments_below(parent, self.trie.children(parent, prefix.shape[1]))

    def increments_below(self, parents: torch.Tensor, children: torch.Tensor) -> torch.Tensor:
        """:meth:`increments` from each row's node (rows,) and its child nodes (rows, codes)
        (:meth:`conrec.sid.trie.SidTrie.children`, -1 = none): what beam search asks, holding its hypotheses' nodes."""
        inc = self._node_log_mass[children.clamp(min=0)] - self._node_log_mass[parents.clamp(min=0)].unsqueeze(1)
        return torch.where(children >= 0, self.weight * inc, torch.zeros_like(inc)).float()

    def item_bonus(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 ``weight * log prior`` of the items at trie rows ``rows`` (any shape)."""
        return (self.weight * (self.item_log_prior[rows.cpu()] - self._node_log_mass[0])).float()
