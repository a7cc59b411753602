"""Experiment variants as child runs: an ablation row, a learning-curve point, a preset comparison.

A variant is a configuration that differs from a parent run's in a few settings. It gets its own
run directory (a *child run*) in which every stage the change does not touch is a link to the
parent's finished stage directory, and the remaining stages run through the normal pipeline
(:func:`conrec.pipeline.run_pipeline`): same stage protocol, same fingerprints, same evaluation as
``conrec demo``. Nothing in a stage knows it runs in a child.

Which stages are linked is decided by the one fingerprint scheme (:func:`conrec.stages.stage_fingerprint`):
a parent stage is linked when it is finished, readable and current for the *child's* configuration,
and every stage it reads is linked too. Linked stages therefore form a prefix of the pipeline, and
the pipeline never starts a linked stage (it is current), so a child never writes into its parent.
A link that is no longer current for the child's configuration is removed, so the child then runs
that stage itself. ``parent.json`` in the child records the parent and what was linked.

Layout (e.g. ``conrec ablate --what grpo``)::

    run_dir/ablations/grpo/grpo_future/
      parent.json        {"parent": "../../..", "linked": ["data", "sid", "sft"]}   (the parent, from the child)
      data -> run_dir/data, sid -> run_dir/sid, sft -> run_dir/sft
      grpo/  eval/       run here, by the normal stages
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from conrec.config import PipelineConfig
from conrec.io import write_json
from conrec.pipeline import run_pipeline, stale_reason
from conrec.run_lock import holding_run
from conrec.runs import FINGERPRINT_FILE, PARENT_FILE, RunDir
from conrec.stages import STAGE_REGISTRY, STAGES


def link_unchanged(parent: str | Path, cfg: PipelineConfig, stages: tuple[str, ...] = STAGES) -> list[str]:
    """Make ``cfg.run_dir`` a child run of ``parent``: link each of ``stages`` that the parent holds
    current for ``cfg`` and whose inputs are linked too; remove links that are no longer current.
    Returns the linked stages (a prefix of the pipeline) and records them in ``parent.json``."""
    parent_run, child = RunDir(Path(parent).resolve()), RunDir(cfg.run_dir)
    if parent_run.root == child.root.resolve():
        raise ValueError(f"a child run needs its own directory, got the parent's {parent_run.root}")
    child.root.mkdir(parents=True, exist_ok=True)
    linked: list[str] = []
    for stage in STAGES:
        path = child.stage_dir(stage)
        spec = STAGE_REGISTRY[stage]
        linkable = (
            stage in stages
            and len(linked) == STAGES.index(stage)  # every earlier stage linked: the prefix rule
            and set(spec.inputs) <= set(linked)
            and stale_reason(parent_run, cfg, stage) is None
        )
        if linkable:
            target = parent_run.stage_dir(stage).resolve()
            if path.is_symlink() and path.resolve() != target:
                path.unlink()
            if not path.exists() and not path.is_symlink():  # relative: a copied parent with its children keeps its own links
                path.symlink_to(os.path.relpath(target, path.parent.resolve()), target_is_directory=True)
            if path.is_symlink():  # a stage the child already ran itself is kept (it is current too)
                linked.append(stage)
                continue
        if path.is_symlink():  # no longer current for this configuration: the child runs it itself
            path.unlink()
    # relative, as the links are: a copied parent's children name the copy (parent_of)
    write_json({"parent": os.path.relpath(parent_run.root, child.root.resolve()), "linked": linked}, child.root / PARENT_FILE)
    return linked


def parent_of(run_dir: str | Path) -> Path | None:
    """The parent run a child run's ``parent.json`` names, as a path from ``run_dir`` (None: no such record, or one
    that does not name a parent).

    Recorded relative to the child (:func:`link_unchanged`), so a parent copied with its children (``cp -a``) has them
    name the copy, as their links lead into it. Why: the record held the parent's absolute path, and
    ``conrec ablate -r copy/ablations/grpo/<row>`` sent the user to ablate the original run. A record an older conrec
    wrote, absolute, is read through the child's links (:func:`_relocated`)."""
    child = Path(run_dir)
    try:
        info = json.loads((child / PARENT_FILE).read_text())
    except (OSError, ValueError):
        return None
    parent = info.get("parent") if isinstance(info, dict) else None
    if not isinstance(parent, str) or not parent:
        return None
    if not Path(parent).is_absolute():
        return _from_relative(child, parent, info.get("linked"))
    return _relocated(child, Path(parent), info.get("linked"))


def _from_relative(child: Path, parent: str, linked: Any) -> Path:
    """Where the relative record ``parent`` leads from ``child``: it was written from the child's real directory
    (:func:`link_unchanged`), which a symlink on the way (an ``ablations/`` on another disk, ``-r`` through a link to the
    row) makes other than the path as given; of the two readings, the one the child's linked stages lead into, else the
    one that exists, else the path as given."""
    readings = [Path(os.path.normpath(base / parent)) for base in (child, child.resolve())]
    stages = [s for s in (linked if isinstance(linked, list) else []) if s in STAGES and (child / s).exists()]
    for here in readings:
        if stages and all((here / s).exists() and (here / s).resolve() == (child / s).resolve() for s in stages):
            return here
    return next((here for here in readings if here.is_dir()), readings[0])


def _relocated(child: Path, recorded: Path, linked: Any) -> Path:
    """Where ``recorded``, an older record's absolute parent, is for ``child`` now: where it stands relative to the run
    the child's first linked stage leads into, when that link leads elsewhere than the recorded run's same stage does
    (the tree was copied or moved; a paper row's parent is the ``alignment`` row, whose data is the run's); the run the
    link leads into when the recorded run is gone; else ``recorded``."""
    for stage in linked if isinstance(linked, list) else []:
        if stage not in STAGES or not (child / stage).is_symlink():
            continue
        try:
            here = (child / stage).resolve(strict=True)
        except OSError:  # a dangling link says nothing
            continue
        try:
            there = (recorded / stage).resolve(strict=True)
        except OSError:
            return here.parent
        return recorded if there == here else Path(os.path.normpath(here.parent / os.path.relpath(recorded, there.parent)))
    return recorded


def run_child(
    parent: str | Path, cfg: PipelineConfig, stages: tuple[str, ...] = STAGES, console: Console | None = None
) -> dict[str, Any]:
    """Link what ``cfg`` leaves unchanged in ``parent`` (:func:`link_unchanged`), then run ``stages``
    in the child run ``cfg.run_dir`` through the normal pipeline (linked stages are current: skipped)."""
    with holding_run(cfg.run_dir):  # the links too are the child's outputs: one writer at a time
        link_unchanged(parent, cfg, stages)
        return run_pipeline(cfg, stages=stages, console=console)


def is_linked(run_dir: str | Path, stage: str) -> bool:
    """Whether ``stage`` of a run is a link to another run's stage (it was not run here)."""
    return RunDir(run_dir).stage_dir(stage).is_symlink()


def stage_seconds(run_dir: str | Path, stage: str) -> float | None:
    """Wall seconds the pipeline recorded for ``stage`` of a run (where it was run, for a linked stage)."""
    path = RunDir(run_dir).stage_dir(stage) / FINGERPRINT_FILE
    try:
        seconds = json.loads(path.read_text()).get("seconds") if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def evaluation_only(cfg: PipelineConfig, run_dir: str | Path, models: list[str]) -> PipelineConfig:
    """``cfg`` as a child run at ``run_dir`` whose eval stage scores only the LM ``models`` (the parent
    evaluated the baselines on the same points), without the exposure-controlled slates and the
    context swap (extra evaluations no variant table reports)."""
    ecfg = cfg.eval.model_copy(
        update={"models": models, "baselines": [], "context_swap": False, "slates": cfg.eval.slates.model_copy(update={"enabled": False})}
    )
    return cfg.model_copy(update={"run_dir": Path(run_dir), "eval": ecfg})
