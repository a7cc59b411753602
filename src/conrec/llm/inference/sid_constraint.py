"""The constraint of constrained decoding: which SID codes may come next for each hypothesis.

One implementation for both decoders (the logits processor inside Hugging Face ``generate``, used for
sampling, and the SID-only beam search), so both walk exactly the same constrained space.
"""

from __future__ import annotations

import torch

from conrec.sid.trie import SidTrie


class SidConstraint:
    """Which codes may come next: the trie's children of each prefix, minus dead branches.

    ``excluded`` (n_prompts, n_items) bool marks the items each prompt must not get (its history).
    """

    def __init__(self, trie: SidTrie, excluded: torch.Tensor | None = None) -> None:
        if excluded is not None and (excluded.dim() != 2 or excluded.shape[1] != len(trie)):
            raise ValueError(f"excluded must have shape (n_prompts, {len(trie)}), got {tuple(excluded.shape)}")
        self.trie = trie
        self._excluded_below = trie.excluded_below(excluded.cpu()) if excluded is not None else None

    def allowed(self, prefix: torch.Tensor, prompt_of_row: torch.Tensor) -> torch.Tensor:
        """(rows, codebook_sizes[level]) bool on CPU: codes that extend each prefix (rows, level: its length)
        towards an item its prompt may still get; an all-False row for a prefix not in the trie."""
        return self.allowed_children(self.trie.child_nodes(prefix.cpu()), prompt_of_row)

    def allowed_children(self, children: torch.Tensor, prompt_of_row: torch.Tensor) -> torch.Tensor:
        """:meth:`allowed` from each row's child nodes (rows, codes) (:meth:`conrec.sid.trie.SidTrie.children`, -1 = no
        such child): a code is allowed when its child exists and, for each row's prompt, some item under it is not
        excluded.

        Masking dead branches at *every* level (not only the last) keeps each beam on a path that
        ends in an allowed item, so K beams always yield K new items however long the history is.
        """
        if self._excluded_below is None:
            return children >= 0
        group = prompt_of_row.cpu().unsqueeze(1).expand_as(children)
        return self.trie.items_left(children, self._excluded_below, group) > 0  # 0 items under a missing child
