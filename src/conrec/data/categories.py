"""How an items table's category cells read as labels: one rule for ``conrec analyze`` and the category baselines.

Why here, in the data package: the eval stage's baselines and the data package's study both split cells; the rule
lived in :mod:`conrec.eval.baselines.category`, so the data package imported the eval package (and scipy) for it.
"""

from __future__ import annotations

from collections.abc import Sequence


def split_labels(cells: Sequence[str | None], separator: str | None) -> list[list[str]]:
    """Each cell's labels: split on ``separator`` (None: the cell is one label), stripped, blanks and repeats
    dropped; a missing or blank cell has none (``"Action|Comedy"`` is two labels, ``"Y | X"`` the same two as
    ``"X|Y"``)."""
    out = []
    for raw in cells:
        parts = (raw or "").split(separator) if separator else [raw or ""]
        out.append(list(dict.fromkeys(p.strip() for p in parts if p.strip())))
    return out
