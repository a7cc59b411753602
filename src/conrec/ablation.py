"""Ablations reproduced by one command (``conrec ablate --what grpo|prompts``).

``grpo`` isolates CoNRec's two RL ingredients one at a time, each row adding one:

* ``sft``: the SFT model, no RL;
* ``grpo_next_neg``: one GRPO stage with full context, reward = exact next-negative hit (the
  conventional target);
* ``grpo_future``: the same single full-context stage, reward = N-day future-negative hit +
  co-dislike + SID-prefix credit (+ liked penalty);
* ``grpo_progressive``: the progressive schedule of ``grpo.stages`` with that reward (the run's own
  GRPO model). The single-stage variants train for the summed steps of the schedule, so every GRPO
  row gets the same optimiser budget.

``prompts`` trains one SFT model per prompt variant (``neg_only``, ``segmented``, ``merged``) on the
same tasks and budget.

Every variant is evaluated exactly like ``conrec eval`` (same split, samples, K and horizons), and
the table keeps the run's baselines beside them. Variant models live in
``run_dir/ablations/<what>/<variant>/``; a variant already trained with the same configuration is
reused (delete the folder to retrain). Results: ``run_dir/ablations/<what>.md`` and ``.json``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from conrec.config import PipelineConfig
from conrec.data.windows import measurable_horizons
from conrec.errors import ConfigError
from conrec.io import read_json, read_parquet, write_json, write_text
from conrec.pipeline import run_pipeline  # one direction only: the pipeline never imports ablations
from conrec.runs import RunDir

WHAT = ("grpo", "prompts")
PROMPT_VARIANTS = ("neg_only", "segmented", "merged")


def variant_fingerprint(cfg: PipelineConfig, variant: str) -> str:
    """Hash of everything a variant's model depends on (so a changed config retrains it)."""
    dumped = cfg.model_dump(mode="json")
    payload = {k: dumped[k] for k in ("seed", "data", "sid", "sft", "grpo")} | {"variant": variant}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _with_prompt_variant(cfg: PipelineConfig, variant: str) -> PipelineConfig:
    prompt = cfg.sft.prompt.model_copy(update={"variant": variant})
    return cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"prompt": prompt})})


def _trained(folder: Path, cfg: PipelineConfig, variant: str, train: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """``folder/model`` trained by ``train`` unless a model with the same fingerprint is there."""
    model, meta = folder / f"{variant}_model", folder / "variant.json"  # distinct names: GRPO keys its work dir on it
    fp = variant_fingerprint(cfg, variant)
    if (model / "config.json").exists() and meta.exists() and read_json(meta).get("fingerprint") == fp:
        return model, read_json(meta)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    stats = train(model)
    info = {"fingerprint": fp, "train_seconds": round(time.perf_counter() - started, 1), "stats": _jsonable(stats)}
    write_json(info, meta)
    return model, info


def _stage_seconds(stats_path: Path) -> float | None:
    """Wall time the run's own stage recorded (its model is reused, not retrained)."""
    return read_json(stats_path).get("seconds") if stats_path.exists() else None


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=str))


def _evaluate(cfg: PipelineConfig, model_dir: Path, console: Console) -> tuple[dict[str, float], float]:
    """Metrics of one LM on the eval split, computed exactly as the eval stage does."""
    from conrec.eval.stage import all_metrics, dislike_counts, fit_events_for, select_samples
    from conrec.llm.predict import Predictor
    from conrec.sid.sid_map import SidMap

    rd = RunDir(cfg.run_dir)
    ecfg = cfg.eval
    samples_all = read_parquet(rd.samples, what="samples")
    samples = select_samples(samples_all, ecfg.split, ecfg.max_samples, ecfg.seed)
    n_items = read_parquet(rd.items, what="items").height
    # LIF's long-tail items: the same training dislikes the eval stage uses
    stats_path = rd.data / "stats.json"
    fit_events, _ = fit_events_for(
        read_parquet(rd.events, what="events"), cfg, read_json(stats_path) if stats_path.exists() else None,
        ecfg.split, samples_all.filter(pl.col("split") == ecfg.split),
    )
    ks = sorted(set(ecfg.ks))
    horizons, _ = measurable_horizons(ecfg.horizons, cfg.data.split.max_horizon_days)  # the eval stage's policy
    started = time.perf_counter()
    predictor = Predictor.from_dir(model_dir, SidMap.from_parquet(rd.sid_map), cfg.sft.prompt, cfg.decode)
    preds = predictor.predict_samples(samples, max(ks), console=console)
    return all_metrics(preds, samples, ks, n_items, horizons, dislike_counts(fit_events)), round(time.perf_counter() - started, 1)


def run(cfg: PipelineConfig, what: str, console: Console | None = None) -> dict[str, dict[str, float]]:
    """Train (or reuse) every variant of ``what``, evaluate them, write and print the table."""
    from conrec.eval.report import markdown_table, render_table

    if what not in WHAT:
        raise ConfigError(f"unknown ablation {what!r}; choose one of {', '.join(WHAT)}")
    console = console or Console()
    started = time.perf_counter()
    # the run itself first (skipped where current): baselines, SFT and progressive GRPO are rows too
    run_pipeline(cfg, console=console)
    rd = RunDir(cfg.run_dir)
    root = rd.root / "ablations" / what
    baseline_metrics = read_json(rd.eval / "metrics.json", what="eval metrics")
    metrics: dict[str, dict[str, float]] = {b: baseline_metrics[b] for b in cfg.eval.baselines if b in baseline_metrics}
    rows: list[dict[str, Any]] = []

    if what == "grpo":
        from conrec.llm.grpo import run as grpo_run

        variants: list[tuple[str, str, Callable[[], tuple[Path, dict[str, Any]]]]] = [
            ("sft", "SFT only", lambda: (rd.sft_model, {"train_seconds": _stage_seconds(rd.sft / "stats.json")})),
            (
                "grpo_next_neg",
                "GRPO, next-negative reward, one full-context stage",
                lambda: _trained(root / "grpo_next_neg", cfg, "grpo_next_neg", lambda out: grpo_run(
                    cfg, console=console, out_dir=out, reward_mode="next_neg", progressive=False)),
            ),
            (
                "grpo_future",
                "GRPO, future + collaborative reward, one full-context stage",
                lambda: _trained(root / "grpo_future", cfg, "grpo_future", lambda out: grpo_run(
                    cfg, console=console, out_dir=out, reward_mode="future_collab", progressive=False)),
            ),
            (
                "grpo_progressive",
                "Progressive GRPO, future + collaborative reward",
                lambda: (rd.grpo_model, {"train_seconds": _stage_seconds(rd.grpo / "stats.json")}),
            ),
        ]
        for name, label, get in variants:
            console.rule(f"[bold]ablation {what}: {name}")
            model_dir, info = get()
            metrics[name], eval_s = _evaluate(cfg, model_dir, console)
            zero = (info.get("stats") or {}).get("mean_zero_adv_share") if info.get("stats") else None
            if name == "grpo_progressive":
                stats_path = rd.grpo / "stats.json"
                zero = read_json(stats_path).get("mean_zero_adv_share") if stats_path.exists() else None
            rows.append({"variant": name, "what": label, "train_seconds": info.get("train_seconds"),
                         "eval_seconds": eval_s, "zero_adv_share": zero})
    else:
        from conrec.llm.sft import run as sft_run

        for variant in PROMPT_VARIANTS:
            console.rule(f"[bold]ablation {what}: {variant}")
            vcfg = _with_prompt_variant(cfg, variant)
            if variant == cfg.sft.prompt.variant:
                model_dir, info = rd.sft_model, {"train_seconds": _stage_seconds(rd.sft / "stats.json")}
            else:
                model_dir, info = _trained(root / variant, vcfg, variant, lambda out, c=vcfg: sft_run(c, console=console, out_dir=out))
            name = f"sft_{variant}"
            metrics[name], eval_s = _evaluate(vcfg, model_dir, console)
            rows.append({"variant": name, "what": f"SFT, {variant} prompt", "train_seconds": info.get("train_seconds"),
                         "eval_seconds": eval_s, "zero_adv_share": None})

    ks = sorted(set(cfg.eval.ks))
    seconds = round(time.perf_counter() - started, 1)
    lines = [
        f"# Ablation: {what}", "",
        f"Run `{rd.root}`, seed {cfg.seed}, split `{cfg.eval.split}`, future window N = {cfg.data.split.horizon_days:g} days.", "",
        markdown_table(metrics, ks), "",
        "| variant | what | train s | eval s | zero-advantage groups |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        zero = "" if r["zero_adv_share"] is None else f"{r['zero_adv_share']:.0%}"
        train = "?" if r["train_seconds"] is None else f"{r['train_seconds']:g}"
        lines.append(f"| {r['variant']} | {r['what']} | {train} | {r['eval_seconds']:g} | {zero} |")
    lines += ["", f"Total {seconds:g} s. Train seconds of `sft` and of the variant matching the run's own configuration "
              "are the run's stage times (those models are reused, not retrained)."]
    write_text("\n".join(lines) + "\n", rd.root / "ablations" / f"{what}.md")
    write_json({"metrics": metrics, "variants": rows, "seconds": seconds}, rd.root / "ablations" / f"{what}.json")
    console.print(render_table(metrics, ks))
    console.print(f"ablation table: {rd.root / 'ablations' / f'{what}.md'}")
    return metrics
