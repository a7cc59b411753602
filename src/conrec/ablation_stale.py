"""Whether an ablation table (``run_dir/ablations/<what>.md``) still describes the run it sits in.

A table is written once, at the end of ``conrec ablate --what <what>``, from child runs that link the run's stages.
Nothing in conrec reads it back, so nothing wrong is served, but a person reading it after the run changed read
numbers that no longer matched it, with no mark: a rerun of the run's SFT or GRPO (``conrec demo`` after a settings
change), or a new ablation stopped halfway. Now:

* each table's ``<what>.json`` records ``built_on``: the identities (:meth:`conrec.runs.RunDir.stage_identity`) of
  every stage of every run its rows were read from (the rows' child runs, the run whose eval gave the baselines),
  which change whenever one of those stages is run again;
* :func:`mark_stale_tables` puts a first line on a table whose ``built_on`` no longer holds (``> **Stale:** ...``,
  with the command that rewrites it), and on the table an ablation is starting to rewrite, since it may stop before
  the end; ``conrec ablate`` (start and end) and ``conrec demo`` (end) call it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from conrec.errors import ConrecError
from conrec.io import read_json, remove_stray_temps
from conrec.runs import STALE_MARK as STALE_MARK  # the tables' mark is the reports' (conrec.runs.mark_stale_file)
from conrec.runs import RunDir, mark_stale_file
from conrec.stages import STAGES

WHAT = ("grpo", "prompts", "paper")
"""The ablations (``conrec ablate --what``), each a table ``ablations/<what>.md`` and ``.json``; here rather than in
:mod:`conrec.ablation` so that the pipeline, which never imports that module, knows the tables' files."""
TABLE_FILES = tuple(f"{what}{ext}" for what in WHAT for ext in (".md", ".json"))
"""The files an ablation writes directly in ``ablations/`` (atomically, :func:`conrec.io.atomic_path`)."""


def built_on(run: RunDir, sources: list[RunDir]) -> dict[str, dict[str, str | None]]:
    """``{source run, relative to run: {stage: identity}}`` for each run a table's rows were read from."""
    return {os.path.relpath(src.root, run.root): src.build_identities("eval") for src in sources}


def table_staleness(run_dir: str | Path, what: str) -> str | None:
    """Why ``ablations/<what>.md`` no longer describes the stages it was made from (which stage of which run was run
    again or removed since), or None when it does, or when it cannot tell (no table, or one written before
    ``built_on`` was recorded)."""
    run = RunDir(run_dir)
    path = run.root / "ablations" / f"{what}.json"
    try:
        recorded = read_json(path).get("built_on") if path.is_file() else None
    except (ConrecError, OSError, AttributeError):
        return None
    if not isinstance(recorded, dict):
        return None
    for rel, identities in recorded.items():
        source = RunDir(run.root / rel)
        now = source.build_identities("eval")
        recorded_ids = identities if isinstance(identities, dict) else {}
        for stage in [s for s in STAGES if s in recorded_ids]:  # the earliest: the later ones were rebuilt on it
            if now.get(stage) != recorded_ids[stage]:
                where = "the run" if rel == "." else f"ablations row {Path(rel).as_posix()}"
                return f"the {stage} stage of {where} was run again or removed after this table was written"
    return None


def mark_stale(run_dir: str | Path, what: str, why: str) -> bool:
    """Put a stale line with ``why`` on top of ``ablations/<what>.md`` (once); False when there is no table or it
    already has one."""
    path = RunDir(run_dir).root / "ablations" / f"{what}.md"
    return mark_stale_file(path, f"{why}; its rows may not match the run: rerun `conrec ablate --what {what}` to rewrite it.")


def remove_table_temps(run_dir: str | Path) -> int:
    """Remove the temporaries that writes of the tables (:data:`TABLE_FILES`) killed by SIGKILL left in ``ablations/``;
    how many. Only those, and nothing deeper: the rows' child runs below it are runs of their own, cleaned when held.
    Called with the run held; a write still in progress holds its temporary's lock, which keeps it
    (:func:`conrec.io.remove_stray_temps`).

    Why: a kill while ``conrec ablate`` wrote its table, or while a stage start marked one stale, left
    ``ablations/.grpo.md.XXXXXXXX.tmp``, which no cleanup looked for (they looked in stage directories and the run
    directory only)."""
    folder = RunDir(run_dir).root / "ablations"
    if not folder.is_dir() or folder.is_symlink():
        return 0
    return remove_stray_temps(folder, only=TABLE_FILES)


def run_tables(run_dir: str | Path) -> tuple[str, ...]:
    """The ``<what>`` of every ablation table the run holds that records what it was built on (``ablations/<what>.json``
    beside ``<what>.md``), found on disk: the pipeline marks them without importing :mod:`conrec.ablation` (which
    imports the pipeline)."""
    folder = RunDir(run_dir).root / "ablations"
    try:
        return tuple(sorted(p.stem for p in folder.glob("*.json") if p.with_suffix(".md").is_file()))
    except OSError:
        return ()


def mark_run_tables(run_dir: str | Path, console: Console) -> None:
    """:func:`mark_stale_tables` for every table the run holds (:func:`run_tables`): what a stage run calls as it
    clears the stages it replaces and as it finishes, so that no command that reruns a stage leaves a table unmarked."""
    if whats := run_tables(run_dir):
        mark_stale_tables(run_dir, whats, console)


def mark_stale_tables(run_dir: str | Path, whats: tuple[str, ...], console: Console, starting: str | None = None) -> None:
    """Mark each of the run's ``whats`` tables whose stages were run again since (:func:`table_staleness`), and the
    ``starting`` one, which an ablation is about to rewrite (it may stop before the end); say so on ``console``."""
    for what in whats:
        why = ("`conrec ablate --what " + what + "` was started again after this table was written and has not finished"
                    if what == starting else table_staleness(run_dir, what))
        if why is not None and mark_stale(run_dir, what, why) and what != starting:
            console.print(f"[yellow]ablations/{what}.md is stale ({why}): rerun `conrec ablate --what {what}`[/]", soft_wrap=True)
