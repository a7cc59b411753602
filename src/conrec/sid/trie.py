"""Prefix trie over the catalogue's SIDs, for constrained decoding.

Why vectorised: beam search asks "which codes may follow each of these B prefixes?" at every
generation step for every beam; a Python loop over B rows would dominate decoding time. The trie is
stored as flat integer arrays (CSR layout) and queried with ``torch.searchsorted`` and
``repeat_interleave``; only the <= L levels are looped over.

Layout: node 0 is the root; nodes of depth ``d`` get consecutive ids after those of depth ``d-1``.
Every edge has the key ``parent * K + code`` (``K`` = largest codebook size); the edge arrays are
sorted by key, so a node's children are one contiguous slice (``child_start[n] : + child_count[n]``)
and finding the child reached by ``code`` is one binary search. Memory is O(number of nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from conrec.errors import DataValidationError
from conrec.sid.tokens import codes_to_sid


class SidTrie:
    """Trie of the SIDs of real items: what may follow a prefix, and which item a full code is."""

    def __init__(self, codes: np.ndarray, codebook_sizes: Sequence[int]) -> None:
        codes = np.asarray(codes)
        sizes = [int(s) for s in codebook_sizes]
        _validate(codes, sizes)
        n_items, levels = codes.shape
        codes = codes.astype(np.int64, copy=False)
        self.levels: int = levels
        self.codebook_sizes: list[int] = sizes
        self._codes = torch.from_numpy(codes.copy())
        self._k = max(sizes)

        keys_per_level: list[np.ndarray] = []
        parents_per_level: list[np.ndarray] = []
        codes_per_level: list[np.ndarray] = []
        node_of_item = np.zeros(n_items, dtype=np.int64)  # current node of each item, starting at root
        path_nodes: list[np.ndarray] = []
        next_id = 1
        for level in range(levels):
            keys = node_of_item * self._k + codes[:, level]
            uniq, inverse = np.unique(keys, return_inverse=True)
            keys_per_level.append(uniq)
            parents_per_level.append(uniq // self._k)
            codes_per_level.append(uniq % self._k)
            node_of_item = next_id + inverse.reshape(-1)
            path_nodes.append(node_of_item)
            next_id += len(uniq)
        n_nodes = next_id
        if len(keys_per_level[-1]) != n_items:
            counts = np.bincount(node_of_item - (n_nodes - len(keys_per_level[-1])))
            dup_leaf = int(np.argmax(counts))
            rows = np.flatnonzero(node_of_item == n_nodes - len(keys_per_level[-1]) + dup_leaf)
            raise DataValidationError(
                f"SID codes are not unique: {int((counts > 1).sum())} code(s) are shared by several items, "
                f"e.g. {codes_to_sid(codes[rows[0]].tolist())} (rows {rows[:5].tolist()})"
            )

        edge_keys = np.concatenate(keys_per_level)  # globally sorted: parents grow with depth
        edge_parent = np.concatenate(parents_per_level)
        child_count = np.bincount(edge_parent, minlength=n_nodes)
        child_start = np.concatenate([[0], np.cumsum(child_count)[:-1]])
        leaf_first = n_nodes - n_items
        item_of_leaf = np.full(n_items, -1, dtype=np.int64)
        item_of_leaf[node_of_item - leaf_first] = np.arange(n_items)

        self._edge_keys = torch.from_numpy(edge_keys)
        self._edge_codes = torch.from_numpy(np.concatenate(codes_per_level))
        self._child_start = torch.from_numpy(child_start.astype(np.int64))
        self._child_count = torch.from_numpy(child_count.astype(np.int64))
        self._leaf_first = leaf_first
        self._item_of_leaf = torch.from_numpy(item_of_leaf)
        self._n_items = n_items
        self._n_nodes = n_nodes
        self._path_nodes = torch.from_numpy(np.stack(path_nodes, 1))  # (n_items, L): node below each level
        self._subtree_items = torch.bincount(self._path_nodes.flatten(), minlength=n_nodes)

    def __len__(self) -> int:
        """Number of items (full SIDs) in the trie."""
        return self._n_items

    @property
    def n_nodes(self) -> int:
        return self._n_nodes

    def _walk(self, prefix: torch.Tensor) -> torch.Tensor:
        """Node id reached by each row of ``prefix`` (B, l), or -1 where the prefix leaves the trie."""
        prefix = prefix.to(device="cpu", dtype=torch.long)
        node = torch.zeros(prefix.shape[0], dtype=torch.long)
        for level in range(prefix.shape[1]):
            code = prefix[:, level]
            ok = (node >= 0) & (code >= 0) & (code < self.codebook_sizes[level])
            key = node.clamp(min=0) * self._k + code.clamp(min=0, max=self._k - 1)
            pos = torch.searchsorted(self._edge_keys, key).clamp(max=len(self._edge_keys) - 1)
            ok &= self._edge_keys[pos] == key
            node = torch.where(ok, pos + 1, torch.full_like(node, -1))  # edge i leads to node i + 1
        return node

    def node_of(self, prefix: torch.Tensor) -> torch.Tensor:
        """Node id reached by each prefix (B, l) (0 = root), or -1 where it leaves the trie."""
        return self._walk(prefix)

    def items_left(self, nodes: torch.Tensor, excluded_below: torch.Tensor | None = None, group: torch.Tensor | None = None) -> torch.Tensor:
        """Items under each node (any shape of node ids; -1 -> 0), minus ``excluded_below[group]``."""
        safe = nodes.clamp(min=0)
        left = self._subtree_items[safe]
        if excluded_below is not None:
            left = left - excluded_below[group, safe] if group is not None else left - excluded_below[safe]
        return torch.where(nodes >= 0, left, torch.zeros_like(left))

    def excluded_below(self, excluded: torch.Tensor) -> torch.Tensor:
        """(P, n_nodes) number of items under each node that are set in ``excluded`` (P, n_items) bool.

        Lets constrained decoding skip, at every level, branches whose every item is excluded
        (e.g. all already in the user's history), so no beam walks into a dead end.
        """
        if excluded.dim() != 2 or excluded.shape[1] != self._n_items:
            raise ValueError(f"excluded must have shape (P, {self._n_items}), got {tuple(excluded.shape)}")
        p = excluded.shape[0]
        out = torch.zeros(p, self._n_nodes, dtype=torch.long)
        rows, items = excluded.nonzero(as_tuple=True)
        if len(rows):
            nodes = self._path_nodes[items]  # (m, L)
            out.index_put_((rows.unsqueeze(1).expand_as(nodes).reshape(-1), nodes.reshape(-1)), torch.ones(nodes.numel(), dtype=torch.long), accumulate=True)
        return out

    def child_nodes(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, codebook_sizes[l]) node reached by each code after each prefix (B, l); -1 where none."""
        return self.children(self._walk(prefix), prefix.shape[1])

    def children(self, nodes: torch.Tensor, level: int) -> torch.Tensor:
        """(B, codebook_sizes[level]) child node of each depth-``level`` node (B,) under each code; -1 where none
        (every code of a -1 node).

        Why from node ids: beam search keeps each hypothesis's node and asks this once per step, instead of walking
        every (prefix + code) from the root again (``B x codes x level`` binary searches per step, most of the
        search's own CPU time on a served request). Read from the CSR arrays: a node's children are one slice.
        """
        nodes = nodes.to(device="cpu", dtype=torch.long)
        n = nodes.shape[0]
        safe = nodes.clamp(min=0)
        counts = torch.where(nodes >= 0, self._child_count[safe], torch.zeros_like(safe))
        rows = torch.repeat_interleave(torch.arange(n), counts)
        first = torch.cumsum(counts, 0) - counts  # each node's first slot in the flat list of children
        edges = torch.repeat_interleave(self._child_start[safe] - first, counts) + torch.arange(len(rows))
        out = torch.full((n, self.codebook_sizes[level]), -1, dtype=torch.long)
        out[rows, self._edge_codes[edges]] = edges + 1  # edge i leads to node i + 1
        return out

    def item_of_node(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item row of each node id (any shape) that is a leaf (a full SID); -1 for any other node and for -1."""
        leaf = nodes - self._leaf_first
        ok = (nodes >= 0) & (leaf >= 0)
        return torch.where(ok, self._item_of_leaf[leaf.clamp(min=0, max=self._n_items - 1)], torch.full_like(nodes, -1))

    def node_log_sums(self, item_log_values: torch.Tensor) -> torch.Tensor:
        """(n_nodes,) log of the sum of ``exp(item_log_values)`` over the items under each node (root 0
        included): the log-mass of every prefix under an item-level distribution."""
        if item_log_values.shape != (self._n_items,):
            raise ValueError(f"item_log_values must have shape ({self._n_items},), got {tuple(item_log_values.shape)}")
        vals = item_log_values.double()
        top = vals.max()
        mass = torch.zeros(self._n_nodes, dtype=torch.float64)
        w = torch.exp(vals - top)
        mass[0] = w.sum()
        for level in range(self.levels):
            mass.index_add_(0, self._path_nodes[:, level], w)
        return torch.log(mass) + top

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        """(B, codebook_sizes[l]) mask of codes that extend each prefix (B, l) towards a real item.

        A prefix that is not in the trie (unknown code, out-of-range code) gets an all-False row:
        constrained decoding must never fall back to "anything goes".
        """
        if prefix.dim() != 2:
            raise ValueError(f"prefix must have shape (B, l), got {tuple(prefix.shape)}")
        depth = prefix.shape[1]
        if not 0 <= depth < self.levels:
            raise ValueError(f"prefix length must be in [0, {self.levels}), got {depth}")
        return (self.children(self._walk(prefix), depth) >= 0).to(prefix.device)

    def codes_of(self, rows: torch.Tensor) -> torch.Tensor:
        """The full codes (N, L) of item rows (N,) (rows index the ``codes`` the trie was built from)."""
        return self._codes[rows.cpu()].to(rows.device)

    def item_index(self, codes: torch.Tensor) -> torch.Tensor:
        """Row (in the ``codes`` the trie was built from) of each full code (B, L), or -1 if none."""
        if codes.dim() != 2 or codes.shape[1] != self.levels:
            raise ValueError(f"codes must have shape (B, {self.levels}), got {tuple(codes.shape)}")
        return self.item_of_node(self._walk(codes)).to(codes.device)


def _validate(codes: np.ndarray, sizes: list[int]) -> None:
    if codes.ndim != 2:
        raise DataValidationError(f"SID codes must be a 2-D array (n_items, levels), got shape {codes.shape}")
    if codes.shape[0] == 0 or codes.shape[1] == 0:
        raise DataValidationError(f"SID codes must be non-empty, got shape {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise DataValidationError(f"SID codes must be integers, got dtype {codes.dtype}")
    if len(sizes) != codes.shape[1]:
        raise DataValidationError(
            f"codebook_sizes has {len(sizes)} level(s) but the codes have {codes.shape[1]} column(s)"
        )
    for level, size in enumerate(sizes):
        col = codes[:, level]
        if size < 1:
            raise DataValidationError(f"codebook size of level {level} must be >= 1, got {size}")
        bad = np.flatnonzero((col < 0) | (col >= size))
        if len(bad):
            raise DataValidationError(
                f"SID code out of range at level {level}: item row {int(bad[0])} has code {int(col[bad[0]])}, "
                f"codebook size is {size}"
            )
