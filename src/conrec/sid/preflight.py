"""What the sid stage refuses from its settings and the data stage's items, checked before the run is touched.

Why apart from :mod:`conrec.sid.stage`: :meth:`conrec.stages.Stage.precheck` calls :func:`preflight` before the
pipeline rewrites config.yaml and clears the sid stage and every stage after it, and this module imports no
quantizer or encoder model. A ``sid.category_level`` on items without categories, or ``sid.encoder.text_fields``
naming only blank columns, was refused inside the runner, after a finished run had lost its SFT, GRPO and eval
stages (which rerunning `conrec sid` with the old config did not give back).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from conrec.io import read_parquet
from conrec.runs import RunDir
from conrec.sid.category_level import category_codes
from conrec.sid.encoder import item_texts

if TYPE_CHECKING:
    from conrec.stages import SidSections


def preflight(sections: SidSections, run_dir: Path) -> tuple[pl.DataFrame, tuple[np.ndarray, list[str]] | None]:
    """Refuse, in one line, what the sid stage would refuse from its settings and the run's items (a missing
    column, an empty title, every text empty in ``sid.encoder.text_fields``, ``sid.category_level`` with no
    category); the runner calls it too. Returns the items and their category codes (None without
    ``sid.category_level``), read once for the runner."""
    items = read_parquet(RunDir(run_dir).items, what="items table (data/items.parquet)")
    category_prefix = category_codes(items) if sections.sid.category_level else None
    item_texts(items, sections.sid.encoder.text_fields)
    return items, category_prefix
