"""The eval stage: baselines and LM checkpoints on the same evaluation samples, one report.

Leakage rule: every baseline is fitted only on events strictly before the evaluated split's
cut-off (``data/stats.json``), so nothing it learns comes from the period it is judged on. Every
model ranks the same samples (capped deterministically by ``eval.seed`` for quick runs), and a
sample a model gives no prediction for counts as all misses.

Outputs (``run_dir/eval``): ``predictions/<model>.parquet`` (sample_id, items, n_invalid[, scores]),
``metrics.json`` (``model -> metric -> value``; per-horizon values as ``FHR@K|N=<h>d`` keys),
``report.md`` and the PNG plots (see :mod:`conrec.eval.report`).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from conrec.errors import ConrecError, StageInputError
from conrec.eval.baselines import make_baseline
from conrec.eval.metrics import evaluate, horizon_key
from conrec.eval.report import render_table, write_report
from conrec.io import read_json, read_parquet, write_json, write_parquet
from conrec.runs import RunDir

if TYPE_CHECKING:
    from conrec.config import PipelineConfig

_STATS_FOR_REPORT = (
    "source", "users", "items", "events", "dislikes", "dislike_share", "users_with_dislikes",
    "median_negatives_per_user", "first_event", "last_event", "valid_cutoff", "test_cutoff", "samples",
)


def select_samples(samples: pl.DataFrame, split: str, max_samples: int | None, seed: int) -> pl.DataFrame:
    """The split's samples, capped to ``max_samples`` by a seeded draw, in sample_id order."""
    if "split" not in samples.columns:
        raise StageInputError(f"samples table has no 'split' column; have {samples.columns}")
    chosen = samples.filter(pl.col("split") == split)
    if chosen.height == 0:
        counts = samples.group_by("split").len().rows()
        raise StageInputError(f"no samples in split {split!r} to evaluate (samples per split: {dict(counts)})")
    if max_samples is not None and chosen.height > max_samples:
        chosen = chosen.sample(n=max_samples, seed=seed, shuffle=False)
    return chosen.sort("sample_id")


def split_cutoff(stats: dict[str, Any] | None, split: str, split_samples: pl.DataFrame) -> tuple[int, str]:
    """(cut-off ts, where it came from). From stats.json when the data stage wrote it; otherwise the
    earliest evaluation time in the split (every history event of the split is before it anyway)."""
    key = f"{split}_cutoff_ts"
    if stats and isinstance(stats.get(key), int):
        return int(stats[key]), "data/stats.json"
    return int(split_samples["ts"].min()), f"min ts of the {split} samples (stats.json has no {key})"  # type: ignore[arg-type]


def predictions_frame(sample_ids: list[int], rankings: list[list[str]], n_invalid: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"sample_id": sample_ids, "items": rankings, "n_invalid": n_invalid or [0] * len(sample_ids)},
        schema={"sample_id": pl.Int64, "items": pl.List(pl.String), "n_invalid": pl.Int64},
    )


def all_metrics(
    preds: pl.DataFrame, samples: pl.DataFrame, ks: list[int], n_items: int, horizons: list[float]
) -> dict[str, float]:
    """Metrics at the data stage's window, plus FHR/FRecall at every extra horizon (flat keys)."""
    out = evaluate(preds, samples, ks, n_items)
    for h in horizons:
        at_h = evaluate(preds, samples, ks, n_items, horizon_days=h)
        for k in ks:
            out[horizon_key("FHR", k, h)] = at_h[f"FHR@{k}"]
            out[horizon_key("FRecall", k, h)] = at_h[f"FRecall@{k}"]
    return out


def _lm_model_dir(run: RunDir, name: str) -> Path:
    return {"sft": run.sft_model, "grpo": run.grpo_model}[name]


def _lm_predictions(cfg: "PipelineConfig", name: str, samples: pl.DataFrame, k: int, console: Console) -> pl.DataFrame:
    """``conrec.llm.predict.predict_samples`` (imported lazily: torch/transformers load only when an
    LM checkpoint is actually evaluated)."""
    try:
        from conrec.llm.predict import predict_samples
    except ImportError as exc:
        raise ConrecError(f"cannot evaluate LM model {name!r}: conrec.llm.predict is unavailable ({exc})") from exc
    if "console" in inspect.signature(predict_samples).parameters:
        return predict_samples(cfg, model=name, samples=samples, k=k, console=console)
    return predict_samples(cfg, model=name, samples=samples, k=k)


def run(cfg: "PipelineConfig", console: Console) -> dict[str, dict[str, float]]:
    """Evaluate ``eval.baselines`` and the trained ``eval.models`` on split ``eval.split``."""
    ecfg = cfg.eval
    rd = RunDir(cfg.run_dir)
    events = read_parquet(rd.events, what="events (data stage output)")
    items = read_parquet(rd.items, what="items (data stage output)")
    samples_all = read_parquet(rd.samples, what="samples (data stage output)")
    stats_path = rd.data / "stats.json"
    stats = read_json(stats_path, what="data stats") if stats_path.exists() else None

    samples = select_samples(samples_all, ecfg.split, ecfg.max_samples, ecfg.seed)
    cutoff, cutoff_source = split_cutoff(stats, ecfg.split, samples_all.filter(pl.col("split") == ecfg.split))
    fit_events = events.filter(pl.col("ts") < cutoff)
    ks = sorted(set(ecfg.ks))
    k_max = max(ks)
    n_items = items.height
    notes: list[str] = []
    if cutoff_source != "data/stats.json":
        notes.append(f"Cut-off derived as the {cutoff_source}.")
    max_h = cfg.data.split.max_horizon_days
    horizons = sorted({h for h in ecfg.horizons if h <= max_h})
    dropped = sorted(set(ecfg.horizons) - set(horizons))
    if dropped:
        notes.append(f"Horizons {dropped} exceed data.split.max_horizon_days={max_h:g} (labels stop there); not plotted.")
    sample_ids = samples["sample_id"].to_list()

    metrics: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    fitted: dict[str, Any] = {}  # the exposure-controlled evaluation scores slates with the same fits
    lm_todo = [m for m in ecfg.models if _lm_model_dir(rd, m).exists()]
    for m in ecfg.models:
        if m not in lm_todo:
            notes.append(f"LM model `{m}` skipped: no checkpoint at {_lm_model_dir(rd, m)} (run `conrec {m}` first).")

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task(f"baselines on {samples.height} {ecfg.split} samples", total=len(ecfg.baselines))
        for name in ecfg.baselines:
            progress.update(task, description=f"baseline {name}: fit + top-{k_max}")
            started = time.perf_counter()
            model = make_baseline(name, ecfg)
            model.fit(fit_events, items)
            fitted[name] = model
            preds = predictions_frame(sample_ids, model.recommend(samples, k_max))
            timings[name] = round(time.perf_counter() - started, 2)
            write_parquet(preds, rd.predictions / f"{name}.parquet")
            metrics[name] = all_metrics(preds, samples, ks, n_items, horizons)
            progress.advance(task)
    # LM decoding shows its own progress bar (one live display at a time), so it runs after ours closed.
    for name in lm_todo:
        console.print(f"LM {name}: constrained decoding of top-{k_max} for {samples.height} samples")
        started = time.perf_counter()
        preds = _lm_predictions(cfg, name, samples, k_max, console)
        timings[name] = round(time.perf_counter() - started, 2)
        write_parquet(preds, rd.predictions / f"{name}.parquet")
        metrics[name] = all_metrics(preds, samples, ks, n_items, horizons)

    write_json(metrics, rd.eval / "metrics.json")
    slate_report = None
    if ecfg.slates.enabled:
        from conrec.eval.candidates import run_slate_eval

        console.print("exposure-controlled evaluation: every model ranks the same same-day candidates")
        slate_report = run_slate_eval(cfg, samples, fitted, lm_todo, items["item_id"].cast(pl.String).to_list(), console)
    fut = samples["future_negs"].list.len()
    dataset_stats: dict[str, Any] = {k: stats[k] for k in _STATS_FOR_REPORT if stats and k in stats}
    dataset_stats.update(
        {
            "evaluated split": ecfg.split,
            "evaluated samples": samples.height,
            "baseline fit cut-off (ts)": cutoff,
            "events used to fit baselines": fit_events.height,
            "future window N (days)": cfg.data.split.horizon_days,
            "mean future dislikes per sample": float(fut.mean() or 0.0),
        }
    )
    extra = [slate_report.markdown()] if slate_report is not None else []
    if notes:
        extra.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    extra.append("## Timings (s, fit + predict)\n\n" + "\n".join(f"- {m}: {t:g}" for m, t in timings.items()))
    report = write_report(rd.root, metrics, dataset_stats, extra_sections=extra)
    console.print(render_table(metrics, ks))
    if slate_report is not None:
        console.print(slate_report.markdown())
    for n in notes:
        console.print(f"[yellow]note:[/] {n}")
    console.print(f"report: {report}")
    rd.mark_done("eval", {"models": list(metrics), "split": ecfg.split, "samples": samples.height})
    return metrics
