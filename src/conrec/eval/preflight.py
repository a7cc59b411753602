"""What the eval stage refuses from its settings and the data stage's items, checked before anything trains.

Why here, apart from :mod:`conrec.eval.stage`: the pipeline calls it as soon as the data stage's items exist
(:func:`conrec.pipeline.run_pipeline`, before SID, SFT and GRPO train), and this module imports no model code.
An ``eval.category.columns`` naming no column of the items was refused by the category baseline after every
training stage had run (minutes to hours), with a message that never named the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from conrec.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from conrec.data.config import SplitConfig
    from conrec.eval.config import EvalConfig
    from conrec.stages import EvalSections


def missing_facet_columns(cfg: EvalConfig, have: list[str]) -> str | None:
    """Why ``eval.category.columns`` does not fit items with columns ``have``; None when it does (or no baseline reads it:
    :func:`conrec.eval.baselines.facet_readers`, from the registry)."""
    from conrec.eval.baselines import facet_readers

    readers = facet_readers(cfg)
    missing = [c for c in cfg.category.columns if c not in have]
    if not readers or not missing:
        return None
    return (
        f"eval.category.columns: no column {', '.join(map(repr, missing))} in the items (data/items.parquet, read by "
        f"{', '.join(readers)}); have {have}"
    )


def preflight(sections: EvalSections, run_dir: Path) -> None:
    """Refuse eval settings that do not fit the data stage's items, when they exist (only their schema is read)."""
    import polars as pl

    from conrec.runs import RunDir

    items = RunDir(run_dir).items
    if not items.is_file():  # no data stage yet: checked once it has run (the runner reports a missing table)
        return
    try:
        have = list(pl.read_parquet_schema(items))
    except Exception:  # an unreadable table (each reader raises its own types): the stage's own reading names it
        return
    if (why := missing_facet_columns(sections.eval, have)) is not None:
        raise ConfigError(why)


def refuse_scoring_trained_labels(split_cfg: SplitConfig, split: str, models: Sequence[str]) -> None:
    """Refuse to score LMs ``models`` on ``split`` when they are trained on its points' labels
    (:meth:`~conrec.data.config.SplitConfig.trains_on_labels_of`: ``eval.split: valid`` with ``train_until: test``).

    The eval stage asks it for the LMs it finds; :func:`conrec.pipeline.run_pipeline` (``conrec demo``) and ``conrec
    ablate`` ask it for the LMs they will train and score, before any stage runs: they refused only at the eval stage,
    after SFT and GRPO had trained. Here, beside the eval stage's other early refusals, in a module that imports no
    model code (the pipeline asks it before it has imported anything heavy). Not a config validator: ``conrec serve``
    and ``predict`` with ``train_until: test`` are legitimate."""
    if models and split_cfg.trains_on_labels_of(split):
        raise ConfigError(
            "eval.split is valid but data.split.train_until is test: the LM is trained on the valid period's labels; "
            "compare settings with train_until: valid (or evaluate the test split)"
        )
