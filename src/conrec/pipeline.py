"""Run the stages in order, skipping those already finished with the same configuration.

Why fingerprints: a rerun after editing one section of the config must redo that stage and every
stage downstream of it, and nothing upstream. Each stage's fingerprint hashes the config sections
it (and its inputs) depend on; it is stored beside the stage's ``_done.json`` marker.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Callable

from rich.console import Console
from rich.rule import Rule

from conrec.config import PipelineConfig, dump_config
from conrec.io import read_json, write_json, write_text
from conrec.runs import STAGES, RunDir
from conrec.runtime import prepare_process

# Config sections each stage reads (upstream stages' sections are added automatically).
_STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "sid": ("sid",),
    "sft": ("sft",),
    "grpo": ("grpo", "decode"),
    "eval": ("eval", "decode"),
}


def stage_fingerprint(cfg: PipelineConfig, stage: str) -> str:
    """Hash of every config section that can change ``stage``'s outputs (its own and upstream)."""
    sections: list[str] = ["seed"]
    for s in STAGES[: STAGES.index(stage) + 1]:
        sections.extend(_STAGE_SECTIONS[s])
    dumped = cfg.model_dump(mode="json")
    payload = json.dumps({k: dumped[k] for k in sections}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stage_runner(stage: str) -> Callable[..., Any]:
    # Imported lazily: each stage pulls in heavy libraries only when it runs.
    if stage == "data":
        from conrec.data.stage import run
    elif stage == "sid":
        from conrec.sid.stage import run
    elif stage == "sft":
        from conrec.llm.sft import run
    elif stage == "grpo":
        from conrec.llm.grpo import run
    elif stage == "eval":
        from conrec.eval.stage import run
    else:  # pragma: no cover - STAGES is closed
        raise ValueError(stage)
    return run


def _fingerprint_path(run: RunDir, stage: str):
    return run.stage_dir(stage) / "_fingerprint.json"


def is_current(run: RunDir, cfg: PipelineConfig, stage: str) -> bool:
    """Finished, and finished with the configuration we are about to use."""
    if not run.is_done(stage):
        return False
    fp = _fingerprint_path(run, stage)
    if not fp.exists():
        return False
    try:
        return json.loads(fp.read_text()).get("fingerprint") == stage_fingerprint(cfg, stage)
    except json.JSONDecodeError:
        return False


def run_pipeline(
    cfg: PipelineConfig,
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``stages`` in order; a stage reruns if forced, unfinished, reconfigured, or upstream reran."""
    console = console or Console()
    run = RunDir(cfg.run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    write_text(dump_config(cfg), run.root / "config.yaml")
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    upstream_reran = False
    for stage in stages:
        if not force and not upstream_reran and is_current(run, cfg, stage):
            console.print(f"[dim]{stage}: finished earlier with this config, skipped (use --force to rerun)[/]")
            continue
        console.print(Rule(f"[bold]{stage}"))
        run.clear_done(stage)
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"console": console}
        if stage == "grpo":
            kwargs["resume"] = not force
        prepare_process(cfg.threads)  # torch threads for this machine, no third-party bars (every stage start)
        results[stage] = _stage_runner(stage)(cfg, **kwargs)
        timings[stage] = round(time.perf_counter() - started, 1)
        write_json({"fingerprint": stage_fingerprint(cfg, stage), "seconds": timings[stage]}, _fingerprint_path(run, stage))
        console.print(f"[green]{stage} done[/] in {timings[stage]:.1f} s")
        upstream_reran = True
    if timings:
        write_json(timings, run.root / "timings.json")
    return results


def run_demo(cfg: PipelineConfig, force: bool = False, console: Console | None = None) -> dict[str, Any]:
    """The whole pipeline; ends with the results table and the report's location.

    The eval stage prints the table when it runs; when it was skipped (a rerun of a finished run)
    the table is rendered from ``eval/metrics.json``, so a rerun still shows the results.
    """
    console = console or Console()
    started = time.perf_counter()
    results = run_pipeline(cfg, force=force, console=console)
    run = RunDir(cfg.run_dir)
    if "eval" not in results:
        show_saved_results(run, console, order=[*cfg.eval.baselines, *cfg.eval.models])
    console.print(Rule("[bold]done"))
    console.print(f"total {time.perf_counter() - started:.0f} s; report: {run.report}")
    for png in sorted(run.eval.glob("*.png")):
        console.print(f"plot: {png}")
    return results


def show_saved_results(run: RunDir, console: Console, order: list[str] | None = None) -> bool:
    """Print the results table of a finished eval stage from ``eval/metrics.json``; False if none.

    ``order``: model columns in this order (the eval stage's: baselines, then LMs); the JSON file
    keeps its keys sorted, so without it the columns are alphabetical.
    """
    path = run.eval / "metrics.json"
    if not path.exists():
        return False
    from conrec.eval.report import ks_of, render_table

    metrics = read_json(path, what="eval metrics")
    rank = {name: i for i, name in enumerate(order or [])}
    metrics = dict(sorted(metrics.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    console.print(render_table(metrics, ks_of(metrics)))
    return True


def run_ablation(cfg: PipelineConfig, what: str, console: Console | None = None) -> Any:
    """Reproduce an ablation table (see conrec.ablation)."""
    from conrec.ablation import run

    return run(cfg, what=what, console=console or Console())
