"""Run the stages in order, skipping those already finished with the same configuration.

Integrity rules (see docs/reliability.md): a stage starts only when every stage it reads is
finished (``_done.json``), was made with the same settings (fingerprint) and its files still read
(:meth:`RunDir.output_problem`); starting a stage invalidates it and every stage downstream first.

Why fingerprints: a rerun after editing one section of the config must redo that stage and every
stage downstream of it, and nothing upstream. Each stage's fingerprint hashes the config sections
it (and its inputs) depend on; it is stored beside the stage's ``_done.json`` marker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

from conrec.ablation_stale import mark_run_tables, remove_table_temps
from conrec.config import PipelineConfig, validated
from conrec.console_text import error_console, shown, stage_console
from conrec.errors import ConfigError, StageInputError, spoken_list
from conrec.io import naming_write_failures, read_json, remove_stray_temps, update_text, write_json
from conrec.run_home import run_config_text
from conrec.run_lock import holding_run, is_worker_rank, rank, refuse_on_worker_rank
from conrec.runs import FINGERPRINT_FILE, PARENT_FILE, PROMPT_PREFIX_KEY, RunDir
from conrec.runtime import apply_threads, quieted, torch_threads_kept
from conrec.source_files import snapshot
from conrec.stages import DISTRIBUTED_STAGES, STAGE_REGISTRY, STAGES, read_inputs, reads_any, section_settings, stage_fingerprint, stage_hash, stage_revision

RUN_FILES = ("config.yaml", "timings.json", PARENT_FILE)
"""The files conrec writes directly in a run directory (atomically, :func:`conrec.io.atomic_path`): whose temporaries a
stage start removes there (:func:`_remove_stray_temps`)."""


def _stage_runner(stage: str) -> Callable[..., Any]:
    """The stage's run function, imported lazily (see :class:`conrec.stages.Stage`)."""
    return STAGE_REGISTRY[stage].load_runner()


def _fingerprint_path(run: RunDir, stage: str) -> Path:
    return run.stage_dir(stage) / FINGERPRINT_FILE


def stale_reason(run: RunDir, cfg: PipelineConfig, stage: str) -> str | None:
    """Why ``stage`` cannot be reused with ``cfg`` (unfinished, other config, unreadable output, or a stage it reads,
    directly or not, not current: :meth:`RunDir.stale_reason`); None if it can."""
    return run.stale_reason(cfg, stage)


def is_current(run: RunDir, cfg: PipelineConfig, stage: str) -> bool:
    """Finished, with the configuration we are about to use, its outputs still readable, and every stage it reads
    current too (:func:`stale_reason`)."""
    return stale_reason(run, cfg, stage) is None


def require_run_dir(run: RunDir, what: str, make: str) -> None:
    """A one-line :class:`StageInputError` when the run directory does not exist: ``what`` is read there, ``make`` what
    makes it ("run `conrec data` first"). Why: a mistyped ``-r`` read as advice to rerun stages ("not finished; run
    `conrec data`", "no model at ...; run `conrec data` and the stages after it") or as a missing table."""
    if not run.root.is_dir():
        raise StageInputError(f"{run.root}: no such run directory ({what}); name the run with -r or -c (run_dir), or {make} to make it")


def require_current(run: RunDir, cfg: PipelineConfig, stages: list[str], who: str) -> None:
    """Raise :class:`StageInputError` unless each of ``stages`` is finished, made with ``cfg``'s
    settings and readable: ``who`` never starts from partial or stale files. A run directory that does not exist
    is said as such (:func:`require_run_dir`)."""
    if stages:
        require_run_dir(run, f"{who} reads the {stages[0]} stage's outputs there", f"run `{STAGE_REGISTRY[stages[0]].command}` first")
    for up in stages:
        why = run.stale_message(cfg, up)  # a stage a rerun cleared says which, not "not finished"
        if why is not None:
            raise StageInputError(
                f"{who} needs the {up} stage's outputs in {run.root}, which are not usable: {why}; "
                f"run `{STAGE_REGISTRY[up].command}` with this config first (or `conrec demo`, which runs what is needed)"
                + run.busy_note(up)
            )


def check_upstream(run: RunDir, cfg: PipelineConfig, stage: str) -> None:
    """:func:`require_current` for every stage ``stage`` reads."""
    require_current(run, cfg, run.reads(cfg, stage), who=stage)


def run_stage(cfg: PipelineConfig, stage: str, console: Console | None = None, **kwargs: Any) -> Any:
    """Run one stage as a unit of the run: check its inputs, invalidate it and what depends on it,
    run it, then record its fingerprint and the run's config (so a later ``conrec demo`` knows
    exactly what is current). Used by ``conrec <stage>`` and by :func:`run_pipeline`. Returns what the stage returned
    (the eval stage: its metrics); it always runs, current or not."""
    refuse_unknown_stages((stage,))  # first: an unknown name is that, on any rank
    distributed = stage in DISTRIBUTED_STAGES
    if not distributed:  # before anything is read or written: a launch's worker ran it beside the main one, unlocked
        refuse_on_worker_rank(f"the {stage} stage")
    console = console or stage_console()
    cfg = validated(cfg)  # a config object edited after loading (a notebook) is checked as a file is, before any write
    run = RunDir(cfg.run_dir)
    check_upstream(run, cfg, stage)  # before anything is written, the run directory included
    with holding_run(run.root, current=lambda: stale_reason(run, cfg, stage) is None, distributed=distributed), quieted(), torch_threads_kept():  # a library caller's process is left as it was
        built_on = upstream_identities(run, cfg, stage)  # before the check that vouches for them (see refuse_if_rebuilt)
        check_upstream(run, cfg, stage)  # again: another process may have rewritten them before we held the run
        return _run_stage_held(cfg, stage, run, console, built_on, **kwargs)


def refuse_unknown_stages(stages: Sequence[str]) -> None:
    """A one-line :class:`ConfigError` naming those of ``stages`` that are no stage of the pipeline, before anything is
    read or written. Why shared: ``run_stage(cfg, "foo")``, public as ``run_pipeline`` is, raised a bare
    ``KeyError: 'foo'`` from the registry, where ``run_pipeline`` named the stages there are."""
    unknown = [s for s in stages if s not in STAGE_REGISTRY]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; the stages are {', '.join(STAGES)}")


def upstream_identities(run: RunDir, cfg: PipelineConfig, stage: str) -> dict[str, str | None]:
    """The identities (:meth:`RunDir.stage_identity`) of the stage runs ``stage`` reads (:meth:`RunDir.reads`): what
    its record says it was built on."""
    return {up: run.stage_identity(up) for up in run.reads(cfg, stage)}


def refuse_if_rebuilt(run: RunDir, stage: str, built_on: dict[str, str | None]) -> None:
    """Raise a one-line :class:`StageInputError`, with ``stage``'s done marker removed, when a stage run it read has been
    rebuilt or cleared since ``built_on`` was taken (at its start).

    Why: the run lock keeps a run's own stages fixed while one runs, but a child run's linked stages are its parent's
    (:mod:`conrec.experiments`) and only the child's lock is held. A parent's `conrec sft` that finished while the
    child's GRPO trained on the old SFT model got the child's GRPO recorded as built on the new one: current, served,
    though trained on weights that no longer exist. Recording the identities taken at the start makes any later rebuild
    visible (:meth:`RunDir.stale_reason`); refusing here says so at once instead of leaving a stage that is stale as it
    ends. The outputs stay as a crash leaves them: complete files, but not marked finished."""
    changed = [up for up, identity in built_on.items() if run.stage_identity(up) != identity]
    if not changed:
        return
    run.clear_done(stage)
    up = changed[0]
    where = f" (linked from {run.stage_dir(up).resolve().parent})" if run.stage_dir(up).is_symlink() else ""
    raise StageInputError(
        f"the {up} stage{where} was rebuilt or cleared while the {stage} stage ran on its earlier outputs, so {stage} "
        f"is not recorded as finished; run `{STAGE_REGISTRY[stage].command}` again once the {up} stage is finished"
    )


def _run_stage_held(
    cfg: PipelineConfig, stage: str, run: RunDir, console: Console, built_on: dict[str, str | None], **kwargs: Any
) -> Any:
    STAGE_REGISTRY[stage].precheck(cfg)  # settings a stage refuses at once (bf16 on a CPU) leave the run as it was
    if not is_worker_rank():  # the main rank holds the run (run_lock): a worker rewrote it even when that rank was refused
        clearing = run.check_clearable(stage, cfg)  # a stage directory it cannot clear: refused before anything is written
        update_text(run_config_text(cfg, run.root), run.root / "config.yaml")  # unchanged: not rewritten
        run.detach_from(stage)  # a child run's linked stages are its parent's: never rewritten from here
        cleared = run.clear(clearing, console)  # it and the later stages that read it for cfg (RunDir.invalidate_from)
        mark_run_tables(run.root, console)  # the ablation tables read from a stage it has just cleared
        _remove_stray_temps(run, stage, cleared, console)
    threads = apply_threads(cfg.threads)  # torch threads for this machine (every stage start; run_stage quiets third parties)
    files = snapshot(STAGE_REGISTRY[stage].source_paths(cfg))  # before it reads them: a change during the run counts
    started = time.perf_counter()
    # the protocol (conrec.stages): the stage's declared sections and the run directory, never the whole config
    with naming_write_failures(run.stage_dir(stage), somewhere_inside=True):  # a full disk in a write no file names (a checkpoint)
        result = _stage_runner(stage)(STAGE_REGISTRY[stage].section_of(cfg), run.root, console=console, **kwargs)
    seconds = round(time.perf_counter() - started, 1)
    if not run.is_done(stage):  # pragma: no cover - every stage marks itself done last
        raise StageInputError(f"the {stage} stage returned without marking itself done")
    if is_worker_rank():  # the main rank records the stage (it holds the run)
        return result
    refuse_if_rebuilt(run, stage, built_on)
    record_finished(cfg, stage, seconds, files, threads, upstream=built_on)
    mark_run_tables(run.root, console)  # and those read from it while it was unfinished (a table with no GRPO model)
    timings_path = run.root / "timings.json"
    try:
        timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        timings = {}
    write_json({**timings, stage: seconds}, timings_path)
    return result


def _remove_stray_temps(run: RunDir, stage: str, cleared: list[str], console: Console) -> None:
    """Remove what interrupted writes (:func:`conrec.io.atomic_path` under SIGKILL) left in the directories of the
    ``cleared`` stages (``stage`` and those after it that :meth:`RunDir.invalidate_from` has just cleared); one line
    when there was any.

    Only here, with the run held (:func:`conrec.run_lock.holding_run`) and the links to a parent run removed
    (:meth:`RunDir.detach_from`), so nothing outside this run directory is touched. Not every writer of these
    directories holds the run lock (`conrec predict --split` and `conrec score --batch` write ``eval/predictions/``):
    each write in progress holds its temporary's own lock, which keeps it (:func:`conrec.io.remove_stray_temps`).
    And in the run directory itself, the temporaries of its own files (:data:`RUN_FILES`: a kill while a stage start
    rewrote ``config.yaml`` left ``.config.yaml.XXXXXXXX.tmp``), nothing else there; and in ``ablations/``, the tables'
    (:func:`conrec.ablation_stale.remove_table_temps`: a stage start rewrites a table it marks stale)."""
    dirs = [d for s in cleared if (d := run.stage_dir(s)).is_dir() and not d.is_symlink()]
    counts = {f"{d.name}/": n for d in dirs if (n := remove_stray_temps(d))}
    if n := remove_stray_temps(run.root, only=RUN_FILES):  # its own files' only: it may hold what conrec did not write
        counts["the run directory"] = n
    if n := remove_table_temps(run.root):  # the ablation tables' (ablations/<what>.md, .json), none of the rows' runs
        counts["ablations/"] = n
    if counts:
        where = ", ".join(f"{n} in {name}" for name, n in counts.items())
        console.print(f"[dim]{stage}: removed {sum(counts.values())} temporary output(s) left by an interrupted write ({where})[/]")


WORKER_ERROR_GRACE_S = 5.0  # how long a launch's other process waits for the main one to say the same error


def run_stage_or_exit(load: Callable[[], PipelineConfig], stage: str, **kwargs: Any) -> Any:
    """:func:`run_stage` for a module entry point (``accelerate launch -m conrec.llm.training.sft``) with the config
    ``load`` returns: a conrec error, a bad config included, is one red line and exit status 2, as the CLI prints
    it, not a traceback from every process (:func:`say_error`: once under a launcher)."""
    from conrec.errors import ConrecError, write_error_line
    from conrec.runtime import prepare_process

    try:
        cfg = load()
        prepare_process(cfg.threads)
        return run_stage(cfg, stage, console=stage_console(), **kwargs)
    except ConrecError as exc:
        say_error(str(exc))
        raise SystemExit(2) from None
    except Exception as exc:  # a read-only or full run directory, as the CLI says it
        if (line := write_error_line(exc)) is None:
            raise
        say_error(line)
        raise SystemExit(2) from None


def say_error(line: str) -> None:
    """Print an entry point's error: at once from the main process; from another process of a launch only if it is
    still running :data:`WORKER_ERROR_GRACE_S` later, naming it.

    Why: the errors come from settings and inputs that every process reads alike, so each printed the same line
    (a GRPO batch that splits a group, twice with 2 processes). A launcher (torchrun, accelerate) stops every process
    once one has exited, so a worker that exited at once could have the main one stopped before it said why; one
    that waits is stopped after the main one's line, and an error of its own (the main one still running, or waiting
    for it) is still said, late."""
    from rich.markup import escape

    label = "error:"
    if is_worker_rank():
        time.sleep(WORKER_ERROR_GRACE_S)
        label = f"error (process {rank()}):"
    error_console().print(f"[bold red]{label}[/] {escape(line)}")  # one line, as the CLI's (a log)


def record_finished(
    cfg: PipelineConfig,
    stage: str,
    seconds: float = 0.0,
    source_files: dict[str, Any] | None = None,
    threads: int | None = None,
    upstream: dict[str, str | None] | None = None,
) -> None:
    """Record that ``stage`` finished with ``cfg`` (its fingerprint file): what makes its model current.

    :func:`run_stage` calls it after the runner; a tool that calls a stage's runner directly (the
    benchmarks) calls it too, or the model it trained is never loaded (``RunDir.model_problem``).
    ``source_files``: the :func:`conrec.source_files.snapshot` of the files outside the run it read.
    ``threads``: the torch threads it ran with. Recorded, not fingerprinted: with ``threads: null`` they follow
    the cores idle at the stage's start, and float sums in another order can move a training run; a run to
    repeat bit for bit sets ``threads`` (docs/results.md). ``upstream``: the identities of the stage runs it read, taken
    when it started (:func:`upstream_identities`); None: taken now (a caller that ran the stage itself, nothing since)."""
    run = RunDir(cfg.run_dir)
    settings = section_settings(cfg, stage)  # the sections as hashed, and (for the stale message) as they read
    write_json(
        {"fingerprint": stage_fingerprint(cfg, stage), "sections": {k: stage_hash(v) for k, v in settings.items()}, "settings": settings,
         "seconds": seconds,
         "revision": stage_revision(cfg, stage),
         "source_files": source_files or {}, "torch_threads": threads, PROMPT_PREFIX_KEY: True,
         # what it was built on: a later rebuild of one of them (a linked parent stage) makes it stale
         "upstream": upstream_identities(run, cfg, stage) if upstream is None else upstream},
        _fingerprint_path(run, stage),
    )


def run_pipeline(
    cfg: PipelineConfig,
    stages: str | Sequence[str] = STAGES,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``stages`` in order; a stage reruns if forced, unfinished, reconfigured, unreadable, or upstream reran.

    A call that fails before a stage starts (an unknown stage name, a stage whose inputs are missing or
    stale) leaves the run as it was: its ``config.yaml`` is rewritten by the first stage that runs, or,
    when every stage of the pipeline was asked for and current, at the end (it rewrote it first, so a refused
    call made the run's good models "made with a different configuration"; ``conrec ablate --what paper -c
    OTHER``, which asks for data and SID only, did so too). ``stages`` may be one name.

    Returns what each stage this call ran returned, by stage name (the eval stage: its metrics, ``{model: {metric:
    value}}``); a stage skipped as current is left out, so a second call on a finished run returns ``{}``. A finished
    run's numbers are in its ``eval/metrics.json`` (:func:`show_saved_results` prints them, as ``conrec demo`` does)."""
    console = console or stage_console()
    cfg = validated(cfg)  # a config object edited after loading (a notebook) is checked as a file is, before any write
    stages = (stages,) if isinstance(stages, str) else tuple(stages)
    refuse_unknown_stages(stages)
    if single := [s for s in stages if s not in DISTRIBUTED_STAGES]:  # a launch's processes each ran them (run_stage)
        refuse_on_worker_rank(f"the {single[0]} stage" if len(single) == 1 else f"each of the {spoken_list(single)} stages")
    run = RunDir(cfg.run_dir)
    if "eval" in stages:  # LMs this pipeline trains or the run has, scored on their training labels: before any trains
        from conrec.eval.preflight import refuse_scoring_trained_labels

        scored = [m for m in cfg.eval.models if m in stages or run.model_dir(m).exists()]
        refuse_scoring_trained_labels(cfg.data.split, cfg.eval.split, scored)
    if stages and (force or stale_reason(run, cfg, stages[0]) is not None):
        check_upstream(run, cfg, stages[0])  # before anything is written, the run directory included (as run_stage)
    with holding_run(cfg.run_dir, current=lambda: not force and all(stale_reason(run, cfg, s) is None for s in stages), distributed=not single), torch_threads_kept():  # across the stages: no other process starts one in between
        return _run_pipeline_held(cfg, stages, force, console)


def _run_pipeline_held(cfg: PipelineConfig, stages: tuple[str, ...], force: bool, console: Console) -> dict[str, Any]:
    run = RunDir(cfg.run_dir)
    results: dict[str, Any] = {}
    reran: list[str] = []  # a later stage that reads one of them (for cfg) runs again (RunDir.invalidate_from cleared it)
    if "sft" in stages and (force or stale_reason(run, cfg, "sft") is not None):
        from conrec.llm.training.sft import check_settings  # the settings SFT refuses before data and SID run, not after

        check_settings(STAGE_REGISTRY["sft"].section_of(cfg))
    own_fixes = {s: run.own_fixes(cfg, s) for s in stages}  # before a rerun above clears their records
    for stage in stages:
        if stage != "data" and "eval" in stages and run.is_done("data"):
            check_evaluable(run, cfg.eval.split)  # before minutes of training, whether data ran now or earlier
            STAGE_REGISTRY["eval"].precheck(cfg)  # its settings against the items (eval.category.columns), as early
        if stage == "grpo" and cfg.sft.copy_bias.enabled:
            console.print("[dim]grpo: skipped (GRPO cannot train a model with sft.copy_bias; eval scores the sft model)[/]")
            continue
        upstream_reran = reads_any(stage, reran, cfg)
        why = None if force or upstream_reran else stale_reason(run, cfg, stage)
        if not force and not upstream_reran and why is None:
            console.print(f"[dim]{stage}: finished earlier with this config, skipped (use --force, or force=True from Python, to rerun)[/]")
            continue
        if why not in (None, "not finished"):
            console.print(f"[yellow]{stage}: rerunning, earlier outputs {why.removesuffix('; rerun it')}[/]")  # a refusal's advice
        elif upstream_reran and not force and run.invalidated_by(stage) is not None:  # it had finished: say why it reruns
            fixed = f", and its own stage has been fixed since ({own_fixes[stage]})" if own_fixes[stage] else ""
            console.print(f"[yellow]{stage}: rerunning, {_rebuilt_inputs(stage, reran, cfg)}{fixed}[/]")
        console.print(Rule(f"[bold]{stage}"))
        kwargs: dict[str, Any] = {"resume": not force} if STAGE_REGISTRY[stage].resumable else {}
        results[stage] = run_stage(cfg, stage, console=console, **kwargs)
        console.print(f"[green]{stage} done[/] in {json.loads(_fingerprint_path(run, stage).read_text())['seconds']:.1f} s")
        reran.append(stage)
    if not reran and set(stages) == set(STAGES):  # every stage was current with cfg: record it (a changed serve section, say)
        update_text(run_config_text(cfg, run.root), run.root / "config.yaml")  # (after some stages only, the others' settings may differ)
    return results


def _rebuilt_inputs(stage: str, reran: list[str], cfg: PipelineConfig) -> str:
    """Why a finished ``stage`` reruns after stages it reads reran above (``reran``): "the data stage it reads was
    rebuilt". Why: after an upgrade the data stage said why it reran, and the SID, SFT and GRPO stages then retrained
    for minutes without a word."""
    ups = [u for u in reran if u in read_inputs(stage, cfg)]
    if len(ups) == 1:
        return f"the {ups[0]} stage it reads was rebuilt above"
    return f"the {spoken_list(ups)} stages it reads were rebuilt above"


def check_evaluable(run: RunDir, split: str) -> None:
    """Stop before training when the data stage wrote no point of the split the eval stage scores.

    Why: a small log can give train points and no test point; the run then trained SID, SFT and GRPO
    for minutes and failed at its last stage ("no samples in split 'test' to evaluate")."""
    stats_path = run.data / "stats.json"
    counts = (json.loads(stats_path.read_text()).get("samples") or {}) if stats_path.is_file() else {}
    if isinstance(counts, dict) and counts.get(split) == 0:
        raise StageInputError(
            f"the data stage wrote no {split} point to evaluate (samples per split: {counts}), so the eval stage would fail "
            f"after training; give the log more users or time after the cut-offs (data.split.test_frac, valid_frac), "
            f"or evaluate another split (eval.split)"
        )


def run_demo(cfg: PipelineConfig, force: bool = False, console: Console | None = None) -> dict[str, Any]:
    """The whole pipeline; ends with the results table and the report's location.

    The eval stage prints the table when it runs; when it was skipped (a rerun of a finished run)
    the table is rendered from ``eval/metrics.json``, so a rerun still shows the results.
    """
    console = console or stage_console()
    started = time.perf_counter()
    results = run_pipeline(cfg, force=force, console=console)
    run = RunDir(cfg.run_dir)
    if "eval" not in results:
        show_saved_results(run, console, order=[*cfg.eval.baselines, *cfg.eval.models])
    console.print(Rule("[bold]done"))
    console.print(f"total {time.perf_counter() - started:.0f} s; report: {shown(run.report)}", soft_wrap=True)
    for png in sorted(run.eval.glob("*.png")):
        console.print(f"plot: {shown(png)}", soft_wrap=True)
    return results


def show_saved_results(run: RunDir, console: Console, order: list[str] | None = None) -> bool:
    """Print the results table of a finished eval stage from ``eval/metrics.json``; False if none.

    ``order``: model columns in this order (the eval stage's: baselines, then LMs); the JSON file
    keeps its keys sorted, so without it the columns are alphabetical.
    """
    path = run.eval / "metrics.json"
    if not path.exists():
        return False
    from conrec.eval.report import ks_of
    from conrec.eval.summary import summary_table

    metrics = read_json(path, what="eval metrics")
    rank = {name: i for i, name in enumerate(order or [])}
    metrics = dict(sorted(metrics.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    slate_path = run.eval / "slate_metrics.json"
    slates = read_json(slate_path, what="slate metrics").get("metrics") if slate_path.exists() else None
    console.print(summary_table(metrics, ks_of(metrics), slates))
    return True

