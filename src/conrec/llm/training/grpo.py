"""The GRPO stage: progressive GRPO from the SFT model with the multi-day future-negative reward.

Progressive schedule (CoNRec): the policy first learns from the negative context alone, then the
positive context is brought in step by step, so it learns to use positives without being dominated
by them. Stage ``i`` of ``cfg.grpo.stages`` builds every prompt with an empty positive segment,
except for a ``positive_share`` of the samples (drawn with a per-stage seed), whose positive
segment keeps the most recent ``max_pos_items`` positives; it runs ``steps`` optimiser steps,
starting from the previous stage's weights. A stage's ``max_pos_items: null`` (the presets' last stage) is the
SFT prompt's own context, the prompt eval shows (every positive of the window for the timeline layouts,
``sft.prompt.max_pos_items`` for the others). ``grpo.progressive: false`` (ablation) runs one stage with that
context for every prompt for the summed steps.

Each stage is one :class:`trl.GRPOTrainer`, used only through its extension points:

* ``rollout_func``: :class:`conrec.llm.training.rollout.ConstrainedRollout` (G distinct valid items per
  group, by constrained beam search; see that module for what this does to the gradient estimate);
* ``reward_funcs`` + ``reward_weights``: one callable per reward component
  (:func:`conrec.llm.training.rewards.make_reward_funcs`), so each component's mean is logged by TRL;
* a callback that turns TRL's logs into ``reward_log.json`` and drives a rich progress bar.

KL reference = the SFT model in *every* stage: TRL builds its reference model from
``model.config._name_or_path`` when given a model instance, so the policy loaded from the previous
stage's weights gets its ``_name_or_path`` pointed at the SFT dir. (A fresh trainer per stage would
otherwise anchor the KL to the previous stage.) No TRL class is subclassed.

Outputs (an ablation variant is a child run with its own ``grpo/``: :mod:`conrec.experiments`)::

    grpo/plan.json            what was planned (fingerprint: a changed config or SFT model restarts from scratch)
    grpo/stage_<i>/           checkpoints/ (while running), model/ (weights after the stage), _done.json
    grpo/reward_log.json      [{stage, stage_index, step, reward, components, zero_adv_share, ...}]
    grpo/stats.json           summary (steps, seconds, rollout share, zero-advantage share)
    grpo/model/               final model: plain HF dir + tokenizer + SID-vocab sidecar (as SFT)

Resume: finished stages are skipped; an unfinished stage continues from its last checkpoint
(optimizer, scheduler, RNG and step restored by the HF Trainer). Runs under ``accelerate launch``
(TRL/Accelerate handle the processes; only the main process writes files)::

    accelerate launch --config_file configs/accelerate/ddp_multigpu.yaml -m conrec.llm.training.grpo --config cfg.yaml
    torchrun --standalone --nproc_per_node 2 -m conrec.llm.training.grpo --config cfg.yaml   # 2 CPU processes (gloo), as in CI
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Heavy imports (torch, transformers, TRL) at module level: this module is the GRPO stage itself, and
# the CLI and the stage registry import it only when that stage runs (see conrec.stages).
import numpy as np
import polars as pl
from accelerate import PartialState
from datasets import Dataset
from rich.console import Console
from transformers import PrinterCallback, set_seed
from transformers.utils import logging as hf_logging
from trl import GRPOConfig, GRPOTrainer

from conrec.config import load_config
from conrec.console_text import shown
from conrec.data.fit_events import training_events_and_rule
from conrec.errors import ConfigError, StageInputError, require_columns
from conrec.io import atomic_path, read_json, read_parquet, write_json
from conrec.llm.config import GrpoConfig, GrpoStageConfig, PromptConfig
from conrec.llm.inference.prompts import build_prompt, recent_negatives_only, shows_positive
from conrec.llm.model.backbone import load_causal_lm, load_model_tokenizer
from conrec.llm.model.checkpoints import (
    OWNER_FILE,
    CompleteCheckpointMarker,
    NoCheckpointAtTheEnd,
    TiedHeadLoad,
    checkpoint_step,
    newest_complete_checkpoint,
    process_change,
    recorded_processes,
    restart_note,
    trainer_save_args,
)
from conrec.llm.model.copy_bias import saved_betas
from conrec.llm.model.precision import ResolvedCompute, pin_launcher_precision, record_precision, resolve_compute, trainer_kwargs
from conrec.llm.model.tokenizer_prefix import adds_special_prefix
from conrec.llm.model.vocab import SidVocab, assert_model_fits, embedding_rows, save_vocab_meta
from conrec.llm.training.collab import CoDislike
from conrec.llm.training.discernment import measure as measure_discernment
from conrec.llm.training.item_vectors import item_vectors
from conrec.llm.training.progress_bar import StepProgressCallback
from conrec.llm.training.rewards import COMPONENTS, REWARD_MODES, ItemSimilarity, make_reward_funcs, sim_targets
from conrec.llm.training.rollout import ConstrainedRollout, RolloutStats, beam_topk, item_token_table, sample_topk
from conrec.run_lock import world_size
from conrec.runs import PROMPT_PREFIX_KEY, RunDir
from conrec.sid.sid_map import SidMap
from conrec.stages import GrpoSections, received_fingerprint, stage_hash
from conrec.swing import Swing

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is documented as experimental in trl 1.16

REWARD_LOG = "reward_log.json"
PLAN_FILE = "plan.json"
DONE_FILE = "_done.json"


# --------------------------------------------------------------------------- schedule (pure)
def plan_stages(grpo: GrpoConfig, progressive: bool) -> list[GrpoStageConfig]:
    """The stages to run: the configured ones, or (ablation) one stage of the summed steps with the SFT prompt's
    own context (``max_pos_items: None``: the prompts eval shows)."""
    if progressive:
        return [s.model_copy() for s in grpo.stages]
    return [GrpoStageConfig(name="full_context", steps=sum(s.steps for s in grpo.stages), max_pos_items=None, positive_share=1.0)]


def positive_mask(n: int, share: float, seed: int) -> np.ndarray:
    """Which of ``n`` samples get a positive segment: exactly ``round(share * n)`` of them, drawn with ``seed``."""
    k = int(round(share * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def stage_records(
    samples: pl.DataFrame,
    stage: GrpoStageConfig,
    stage_seed: int,
    sid_of: Callable[[str], str],
    prompt_cfg: PromptConfig,
    sim_target: str = "future",
) -> list[dict[str, Any]]:
    """One GRPO example per sample: the stage's prompt plus the reward targets as columns.

    Targets travel with the prompt (TRL passes extra columns to the reward functions): the
    N-day future-negative set, the next negative, every item the user liked in the sample's history
    (its ``max_history`` events: the liked-item penalty reads all of them, not just the part shown in the prompt) and the
    positives of the same future window (``future_pos``: the similarity reward's penalty; empty
    when the samples table predates that column) and the similarity reward's target set
    (``sim_targets``: the future negatives, or the next negative alone with ``sim_target="next"``);
    ``shows_positive`` says whether the prompt shows a positive (:func:`n_with_positives`).
    """
    mask = positive_mask(samples.height, stage.positive_share, stage_seed)
    out: list[dict[str, Any]] = []
    future_pos = samples["future_pos"].to_list() if "future_pos" in samples.columns else [None] * samples.height
    if stage.neg_recent_days is not None and "hist_ts" not in samples.columns:
        raise StageInputError(f"GRPO stage {stage.name!r} limits negatives by recency: the samples need hist_ts; rerun `conrec data`")
    hist_ts = samples["hist_ts"].to_list() if stage.neg_recent_days is not None else [None] * samples.height
    rows = samples.select("sample_id", "hist_items", "hist_feedback", "next_neg", "future_negs", "ts").iter_rows()
    for with_pos, fpos, hts, (sample_id, hist, fb, next_neg, future, t) in zip(mask.tolist(), future_pos, hist_ts, rows):
        budget = stage.max_pos_items if with_pos else 0  # None: the SFT prompt's own context (build_prompt's default)
        shown, shown_fb = (hist, fb) if hts is None else recent_negatives_only(hist, fb, hts, t, stage.neg_recent_days)
        prompt = build_prompt(shown, shown_fb, sid_of, prompt_cfg, max_pos_items=budget)
        out.append(
            {
                "prompt": prompt,
                "sample_id": int(sample_id),
                "pos_budget": int(_effective_budget(budget, shown_fb, prompt_cfg)),
                "shows_positive": shows_positive(prompt),  # a budget shows nothing in neg_only or to a user without positives
                "future_negs": list(future or []),
                "next_neg": next_neg,
                "liked_items": sorted({i for i, f in zip(hist, fb) if f > 0}),
                "seen_items": sorted(set(hist)),
                "future_pos": list(fpos or []),
                "sim_targets": sim_targets([future], [next_neg], sim_target)[0],  # type: ignore[arg-type]
            }
        )
    return out


def n_with_positives(records: Sequence[dict[str, Any]]) -> int:
    """How many of a stage's prompts show at least one positive (``stats.json``'s ``n_with_positives``; it counted
    the prompts given a positive budget, 64 of 64 in a neg_only layout that shows none)."""
    return int(sum(bool(r["shows_positive"]) for r in records))


def _effective_budget(budget: int | None, feedback: Sequence[int], prompt_cfg: PromptConfig) -> int:
    """A prompt's positive budget as a number: ``None`` (the SFT prompt's own context) is ``sft.prompt.max_pos_items``,
    or, for the timeline layouts (which cap no positive), the history's positive count."""
    if budget is not None:
        return budget
    return sum(1 for f in feedback if f > 0) if prompt_cfg.is_timeline else prompt_cfg.max_pos_items


def select_train_samples(samples: pl.DataFrame, max_samples: int | None, seed: int) -> pl.DataFrame:
    """Train-split samples with a non-empty future set, optionally a seeded random subset."""
    cols = ("sample_id", "split", "ts", "hist_items", "hist_feedback", "next_neg", "future_negs")
    require_columns(samples, cols, "samples table (see conrec.data.samples)", StageInputError)
    train = samples.filter((pl.col("split") == "train") & (pl.col("future_negs").list.len() > 0))
    if train.height == 0:
        raise StageInputError("samples table has no train sample with a non-empty future_negs set")
    if max_samples is not None and train.height > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(train.height, size=max_samples, replace=False))
        train = train[idx.tolist()]
    return train


# --------------------------------------------------------------------------- reward log
class RewardLog:
    """``reward_log.json``: one entry per logged optimiser step, rewritten atomically on every append."""

    def __init__(self, path: Path, write: bool = True) -> None:
        self.path = Path(path)
        self.write = write
        self.entries: list[dict[str, Any]] = read_json(self.path, what="GRPO reward log") if self.path.exists() else []

    def keep_until(self, stage_index: int, stage_step: int) -> None:
        """Drop entries a resumed stage will log again (after its checkpoint) and any of later stages."""
        self.entries = [
            e
            for e in self.entries
            if e["stage_index"] < stage_index or (e["stage_index"] == stage_index and e["stage_step"] <= stage_step)
        ]
        self.save()

    def append(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        self.save()

    def save(self) -> None:
        if self.write:
            write_json(self.entries, self.path)


class GrpoLogCallback(StepProgressCallback):
    """TRL logs -> reward-log entries (reward, components, zero-advantage share), plus a progress bar."""

    def __init__(
        self,
        log: RewardLog,
        stage: GrpoStageConfig,
        stage_index: int,
        step_offset: int,
        rollout_stats: RolloutStats,
        console: Console,
        show_progress: bool,
    ) -> None:
        name = f"GRPO {stage_index}:{stage.name}"
        super().__init__(console, name, label=f"[bold]{name}", show=show_progress)
        self.log = log
        self.stage = stage
        self.stage_index = stage_index
        self.step_offset = step_offset
        self.stats = rollout_stats
        self.step_started = time.perf_counter()
        self.step_seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self.step_started)
        super().on_step_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "reward" in logs:
            self._log_reward(state, logs)
        super().on_log(args, state, control, logs=logs, **kwargs)  # after the status: the final step's line carries it

    def _log_reward(self, state: Any, logs: dict[str, Any]) -> None:
        """One step's reward-log entry (main process) and the bar's status."""
        entry: dict[str, Any] = {
            "stage": self.stage.name,
            "stage_index": self.stage_index,
            "step": self.step_offset + int(state.global_step),
            "stage_step": int(state.global_step),
            "reward": float(logs["reward"]),
            "components": {c: float(logs.get(f"rewards/{c}/mean", float("nan"))) for c in COMPONENTS},
            "zero_adv_share": float(logs.get("frac_reward_zero_std", float("nan"))),
            "invalid_rate": float(self.stats.last_invalid_rate),
            "kl": float(logs["kl"]) if "kl" in logs else None,
        }
        if state.is_world_process_zero:
            self.log.append(entry)
        self.show_status(f"last reward {entry['reward']:.3f} hit {entry['components']['hit']:.2f} zero-adv {entry['zero_adv_share']:.0%}")


# --------------------------------------------------------------------------- inputs
def fingerprint(sections: GrpoSections, run_dir: Path, sft_dir: Path) -> str:
    """What the stage's outputs depend on: the stage fingerprint (:func:`conrec.stages.stage_fingerprint`,
    computed from what the runner received), the SFT weights it starts from (size and time of
    their files: a retrained SFT model with the same settings must not resume old stages) and the identities
    of the stage runs it reads (as SFT's checkpoints: a rerun in the same second changes them too)."""
    sft_stamp = ""
    for name in ("config.json", "model.safetensors"):
        p = sft_dir / name
        if p.exists():
            sft_stamp += f"{name}:{p.stat().st_size}:{int(p.stat().st_mtime)};"
    inputs = RunDir(run_dir).input_identities("grpo")
    return stage_hash({"stage": received_fingerprint("grpo", sections, run_dir), "sft": sft_stamp, "inputs": inputs})


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class _Job:
    """What every stage of one GRPO run shares: resolved paths, inputs, reward functions and the plan."""

    sections: GrpoSections
    console: Console
    resume: bool
    reward_mode: str
    progressive: bool
    rd: RunDir
    out: Path  # the final model
    work: Path  # plan, stage_<i>/, reward log, stats
    sft_dir: Path  # the starting point and the KL reference
    state: PartialState
    compute: ResolvedCompute
    sid_map: SidMap
    samples: pl.DataFrame
    train: pl.DataFrame
    seed: int
    fit_rule: str
    vector_source: str | None
    reward_funcs: list[Any]
    reward_weights: list[float]
    stages: list[GrpoStageConfig]
    sid_of: Callable[[str], str]

    @property
    def is_main(self) -> bool:
        return bool(self.state.is_main_process)


@dataclass(frozen=True)
class _StageRun:
    """One stage trained in this call: its ``_done.json`` summary and unrounded timings for the totals."""

    info: dict[str, Any]
    rollout_seconds: float
    train_seconds: float


def run(sections: GrpoSections, run_dir: Path, console: Console | None = None, resume: bool = True) -> dict[str, Any]:
    """Run progressive GRPO from the run's SFT model; write the final model; return a summary.

    Takes the stage's declared sections (``grpo``; ``sft`` for the prompt layout and discernment
    questions; ``decode`` for history exclusion; ``seed``) and the run directory (the stage protocol
    of :mod:`conrec.stages`). The reward is ``grpo.reward.mode``: ``future_collab``
    (hit/collab/prefix/liked), ``similarity`` (CoNRec's cosine reward to future negatives + Swing
    co-negatives minus the future-positive penalty) or ``next_neg`` (ablation: next-negative exact
    hit only); ``grpo.progressive: false`` runs one full-context stage (ablation). The SFT model
    (``sft/model``) is the starting point and the KL reference; an ablation that starts GRPO from
    an SFT variant is a child run holding that variant (:mod:`conrec.experiments`).
    ``resume=False`` discards earlier stage outputs.

    Three steps: :func:`_prepare` + :func:`_plan` (inputs, and which earlier outputs can be kept),
    :func:`_run_stage` for every stage not finished earlier, :func:`_save` (the final model and stats).
    """
    hf_logging.disable_progress_bar()  # per-shard load/save bars would drown the stage's own progress bar
    # TRL 1.16 calls transformers' renamed gradient-checkpointing helpers on every step: not actionable here
    warnings.filterwarnings("ignore", message=r".*(gradient|activation)_checkpointing.*", category=FutureWarning)
    mode = sections.grpo.reward.mode
    if mode not in REWARD_MODES:  # pragma: no cover - the config's Literal already refuses others
        raise ConfigError(f"grpo.reward.mode must be one of {', '.join(REWARD_MODES)}, got {mode!r}")
    started = time.perf_counter()
    job = _prepare(sections, Path(run_dir), console or Console(), resume, mode)
    _plan(job)
    log = RewardLog(job.work / REWARD_LOG, write=job.is_main)
    summaries: list[dict[str, Any]] = []
    done_now: list[_StageRun] = []
    step_offset = 0
    prev_model = job.sft_dir
    for i, stage in enumerate(job.stages):
        if (earlier := _finished_earlier(job, i, stage)) is not None:
            summaries.append(earlier)
        else:
            if not (prev_model / "config.json").exists():
                raise StageInputError(f"GRPO stage {i} should start from {prev_model}, which is missing; rerun with --no-resume")
            done_now.append(_run_stage(job, log, i, stage, prev_model, step_offset))
            summaries.append(done_now[-1].info)
        step_offset += stage.steps
        prev_model = job.work / f"stage_{i}" / "model"
    return _save(job, log, summaries, done_now, prev_model, started)


def check_group_batch(batch_size: int, processes: int, num_generations: int, rollout: str = "beam") -> None:
    """Each prompt's ``num_generations`` completions must fit whole in one step's batch over all processes (TRL
    raised it with a traceback after the model had loaded): a one-line error before anything is read.

    With ``rollout: sample`` they must also fit whole in one process's batch: a group split across processes is
    decoded by each of them (:class:`conrec.llm.training.rollout.ConstrainedRollout`), which gives the same top-G
    for beams but two independent draws for samples, so the group could hold an item twice."""
    if (batch_size * processes) % num_generations:
        raise ConfigError(
            f"grpo.batch_size ({batch_size}) x processes ({processes}) must be a multiple of grpo.num_generations "
            f"({num_generations}): each prompt's group of completions shares a batch"
        )
    if rollout == "sample" and processes > 1 and batch_size % num_generations:
        raise ConfigError(
            f"grpo.rollout: sample on {processes} processes needs grpo.batch_size ({batch_size}) to be a multiple of "
            f"grpo.num_generations ({num_generations}): a group split across processes is sampled twice, independently, "
            "and could hold an item twice (beam rollouts may split a group)"
        )


@dataclass(frozen=True)
class _Inputs:
    """What :func:`preflight` read and checked: the SFT model dir, the SID map, the samples, the train prompts and,
    for the similarity reward, the item vectors (read once)."""

    sft: Path
    sid_map: SidMap
    samples: pl.DataFrame
    train: pl.DataFrame
    seed: int
    vectors: tuple[np.ndarray, str] | None = None  # the similarity reward's item vectors and their source, when it needs them


def preflight(sections: GrpoSections, run_dir: Path, processes: int | None = None) -> _Inputs:
    """Every refusal GRPO can make from its settings and the run's existing inputs (the SFT model, the SID map,
    the samples), before anything is written: :meth:`conrec.stages.Stage.precheck` calls it before the pipeline
    rewrites config.yaml and invalidates grpo and eval, and :func:`_prepare` before :func:`_plan` discards earlier
    stage outputs. (A refused `conrec grpo` with a batch that splits a group, or a copy-bias SFT model, left a
    finished run without its GRPO and eval markers.) ``processes``: the launch's processes (None =
    ``WORLD_SIZE``, as the launcher set it: the pipeline calls this before any process group exists)."""
    grpo, rd = sections.grpo, RunDir(run_dir)
    processes = world_size() if processes is None else processes
    check_group_batch(grpo.batch_size, processes, grpo.num_generations, grpo.rollout)
    sft = rd.model_dir("sft")
    if not (sft / "config.json").exists():
        raise StageInputError(f"SFT model not found at {sft.absolute()} (run `conrec sft` first)")
    sid_map = SidMap.from_parquet(rd.sid_map)
    assert_model_fits(sft, sid_map)
    if saved_betas(sft) is not None:
        raise ConfigError(
            "grpo cannot train a model with a copy bias (sft.copy_bias): TRL's log-probabilities would lack the bias "
            "the model decodes with; skip `conrec grpo` (eval.models: [sft]) or train SFT without it"
        )
    check_group_size(grpo.num_generations, len(sid_map))
    samples = read_parquet(rd.samples, what="samples table (run `conrec data` first)")
    seed = sections.seed * 1_000_003 + grpo.seed
    train = select_train_samples(samples, grpo.max_samples, seed)
    per_step = grpo.batch_size * processes // grpo.num_generations
    if train.height < per_step:  # TRL ran 0 steps, and the SFT weights were saved as a finished GRPO model
        raise StageInputError(
            f"GRPO has {train.height} train prompt(s) but one step takes {per_step} (grpo.batch_size {grpo.batch_size} x "
            f"{processes} process(es) / num_generations {grpo.num_generations}): lower grpo.batch_size or raise grpo.max_samples"
        )
    if grpo.reward.mode == "similarity" and grpo.reward.gamma > 0 and "future_pos" not in samples.columns:
        raise StageInputError("the future-positive penalty needs the samples' future_pos column: rerun `conrec data`")
    vectors = item_vectors(rd.sid, sid_map.codes) if grpo.reward.mode == "similarity" else None  # missing or mis-sized: refused here
    recent = [s.name for s in plan_stages(grpo, grpo.progressive) if s.neg_recent_days is not None]
    if recent and "hist_ts" not in samples.columns:
        raise StageInputError(f"GRPO stage {recent[0]!r} limits negatives by recency: the samples need hist_ts; rerun `conrec data`")
    return _Inputs(sft=sft, sid_map=sid_map, samples=samples, train=train, seed=seed, vectors=vectors)


def _prepare(sections: GrpoSections, run_dir: Path, console: Console, resume: bool, reward_mode: str) -> _Job:
    """Resolve paths, read and check the inputs (:func:`preflight`), fit the reward signals, plan the stages."""
    rd = RunDir(run_dir)
    compute = resolve_compute(sections.compute)
    pin_launcher_precision(compute, console)  # compute.precision decides, not a launcher's setting
    state = PartialState(cpu=compute.use_cpu)  # the same process state the trainers will use
    inputs = preflight(sections, run_dir, state.num_processes)
    sft, sid_map, samples, train, seed = inputs.sft, inputs.sid_map, inputs.samples, inputs.train, inputs.seed
    grpo = sections.grpo
    # the reward's co-dislike and Swing signals see the baselines' fit events, never a valid/test label
    fit_events, fit_rule = training_events_and_rule(rd.root, sections.split, samples)
    codislike = CoDislike.fit(fit_events, top_n=grpo.reward.collab_top_n, items=sid_map.items)
    item_sim, vector_source = similarity_signal(rd, sid_map, fit_events, grpo, required=reward_mode == "similarity", vectors=inputs.vectors)
    reward_funcs, reward_weights = make_reward_funcs(
        grpo.reward,
        sid_map,
        codislike,
        mode=reward_mode,  # type: ignore[arg-type]
        exclude_seen=sections.exclude_history,
        item_sim=item_sim,
    )
    return _Job(
        sections=sections,
        console=console,
        resume=resume,
        reward_mode=reward_mode,
        progressive=grpo.progressive,
        rd=rd,
        out=rd.grpo_model,
        work=rd.grpo,
        sft_dir=sft,
        state=state,
        compute=compute,
        sid_map=sid_map,
        samples=samples,
        train=train,
        seed=seed,
        fit_rule=fit_rule,
        vector_source=vector_source,
        reward_funcs=list(reward_funcs),
        reward_weights=list(reward_weights),
        stages=plan_stages(grpo, grpo.progressive),
        sid_of=sid_map.sid_lookup(),
    )


def discard_note(had_plan: bool, resume: bool, earlier_stages: bool, unprefixed: bool = False) -> str | None:
    """What a fresh plan says before it discards the earlier run's stages (pure); None when nothing is discarded
    or nothing needs saying. ``unprefixed``: the earlier plan's stages were trained without the prompts' special
    prefix (:func:`plan_without_prefix`).

    Why: ``--no-resume`` (or ``--force``) emptied ``grpo/stage_*``, finished stages and checkpoints alike, without a
    word, while a changed config said "starting from scratch"; SFT says the same in both cases."""
    if not resume and earlier_stages:
        return "GRPO: resume is off (--no-resume or --force): the earlier run's stages and checkpoints are discarded, starting from scratch"
    if resume and unprefixed:  # nothing to say when no stage holds anything (it is not a changed config either)
        return (
            "GRPO: the earlier run's plan does not record that its stages saw the tokenizer's special prefix (its BOS "
            "token), which conrec before 6 December 2026 left out of the prompts (plans made before 7 December do not "
            "record it): starting from scratch"
        ) if earlier_stages else None
    if resume and had_plan:
        return "GRPO config or SFT model changed since the last run: starting from scratch"
    return None


def _finished_earlier(job: _Job, i: int, stage: GrpoStageConfig) -> dict[str, Any] | None:
    """Stage ``i``'s summary when an earlier call finished it (it is skipped: one line, from the main process only,
    as every line of the stage; under torchrun each process printed its own), else None."""
    done = job.work / f"stage_{i}" / DONE_FILE
    if not done.exists():
        return None
    if job.is_main:
        job.console.print(f"[dim]GRPO stage {i} ({stage.name}): finished earlier, skipped[/]")
    return read_json(done, what=f"GRPO stage {i} marker")


def _plan(job: _Job) -> None:
    """Write ``plan.json``; discard earlier stage outputs unless resuming the same plan (fingerprint).

    What survives decides where the run resumes: a stage with ``_done.json`` is skipped, an
    unfinished one continues from its last complete checkpoint (:func:`_resume_point`).
    """
    fp = fingerprint(job.sections, job.rd.root, job.sft_dir)
    plan_path = job.work / PLAN_FILE
    old_plan = read_json(plan_path, what="GRPO plan") if plan_path.exists() else None
    unprefixed = plan_without_prefix(old_plan, job.sft_dir)
    fresh = not job.resume or old_plan is None or old_plan.get("fingerprint") != fp or unprefixed
    if job.is_main:
        if fresh and job.work.exists():
            earlier = any(any(p.iterdir()) for p in job.work.glob("stage_*") if p.is_dir())
            if (note := discard_note(old_plan is not None, job.resume, earlier, unprefixed)) is not None:
                job.console.print(f"[yellow]{note}[/]")
            for p in job.work.glob("stage_*"):
                shutil.rmtree(p, ignore_errors=True)
            (job.work / REWARD_LOG).unlink(missing_ok=True)
        write_json(
            {
                "fingerprint": fp,
                "reward_mode": job.reward_mode,
                "progressive": job.progressive,
                "stages": [s.model_dump() for s in job.stages],
                "n_train_samples": job.train.height,
                "reward_fit_events": job.fit_rule,
                "item_vectors": job.vector_source,
                PROMPT_PREFIX_KEY: True,
            },
            plan_path,
        )
    job.state.wait_for_everyone()


def plan_without_prefix(old_plan: dict[str, Any] | None, sft_dir: Path) -> bool:
    """Whether the earlier plan's stages were trained by a conrec that gave the LM its rollout prompts without the
    tokenizer's special prefix (no :data:`conrec.runs.PROMPT_PREFIX_KEY` in it) while the run's tokenizer has one
    (a BOS: Llama-3, Gemma, Mistral); such stages are not resumed.

    Why: the prefix is not part of the plan's fingerprint (no fingerprint changed with it), so `conrec demo`, which
    reruns such a GRPO stage as stale, and `conrec grpo` found the same plan and kept its finished stages: the
    "rerun" took under a second, and a model trained without the prefix was recorded as made with it."""
    return old_plan is not None and old_plan.get(PROMPT_PREFIX_KEY) is not True and adds_special_prefix(sft_dir)


def _resume_point(job: _Job, log: RewardLog, i: int, stage: GrpoStageConfig, ckpt_dir: Path) -> Path | None:
    """The checkpoint stage ``i`` continues from (None: from its start); trims the reward log to match, and records
    this launch's number of processes beside the checkpoints it will write (the checkpoints' owner record, as SFT's;
    none recorded, as before 7 December 2026, counts as 1).

    Why the count is checked: ``grpo.batch_size`` is per process, so a stage resumed by a launch with another number
    of processes trained on batches neither launch would (SFT refuses the same, :func:`process_change`)."""
    # the newest complete checkpoint (a half-written one is deleted by the main process and the previous one used)
    resume_from, incomplete = newest_complete_checkpoint(ckpt_dir, clean=job.is_main) if job.resume else (None, [])
    job.state.wait_for_everyone()
    if resume_from is not None and (changed := process_change(recorded_processes(ckpt_dir), job.state.num_processes)):
        raise StageInputError(f"GRPO stage {i} ({stage.name}): {changed}")
    if job.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_json({"num_processes": int(job.state.num_processes)}, ckpt_dir / OWNER_FILE)
    if resume_from is not None:
        if job.is_main:  # once, not once per process
            job.console.print(f"GRPO stage {i} ({stage.name}): resuming from {resume_from.name}")
        log.keep_until(i, checkpoint_step(resume_from))
    else:
        if job.is_main and (note := restart_note(resume_from, incomplete)) is not None:
            job.console.print(f"[yellow]GRPO stage {i} ({stage.name}): {note}[/]", soft_wrap=True)
        log.keep_until(i, 0)
    return resume_from


def _run_stage(job: _Job, log: RewardLog, i: int, stage: GrpoStageConfig, prev_model: Path, step_offset: int) -> _StageRun:
    """Train stage ``i`` from ``prev_model`` (resuming its checkpoint if any); save its model and ``_done.json``."""
    sections, grpo, console, is_main = job.sections, job.sections.grpo, job.console, job.is_main
    sdir = job.work / f"stage_{i}"
    set_seed(job.seed + i)
    records = stage_records(job.train, stage, job.seed + 7919 * (i + 1), job.sid_of, sections.sft.prompt, grpo.reward.target)
    dataset = Dataset.from_list(records)
    policy = load_causal_lm(prev_model)
    # TRL builds the KL reference from this path (model passed as an instance): keep it the SFT model.
    policy.config._name_or_path = str(job.sft_dir)
    tokenizer = load_model_tokenizer(job.sft_dir)
    vocab = SidVocab.from_tokenizer(tokenizer, job.sid_map.codebook_sizes, embedding_rows(policy))
    rollout = build_rollout(grpo, tokenizer, job.sid_map, vocab)
    ckpt_dir = sdir / "checkpoints"
    resume_from = _resume_point(job, log, i, stage, ckpt_dir)
    cb = GrpoLogCallback(log, stage, i, step_offset, rollout.stats, console, show_progress=is_main)
    trainer = _make_trainer(
        TrainerSpec(
            policy=policy,
            tokenizer=tokenizer,
            dataset=dataset,
            reward_funcs=job.reward_funcs,
            reward_weights=job.reward_weights,
            rollout=rollout,
            callback=cb,
            grpo=grpo,
            stage=stage,
            ckpt_dir=ckpt_dir,
            seed=job.seed + i,
            compute=job.compute,
        )
    )
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from is not None else None)
    finally:
        cb.close()
    train_s = time.perf_counter() - t0
    acc = trainer.accelerator
    acc.wait_for_everyone()
    entries = [e for e in log.entries if e["stage_index"] == i]
    info: dict[str, Any] = {
        "stage": stage.name,
        "stage_index": i,
        "steps": int(trainer.state.global_step),
        "steps_this_run": int(trainer.state.global_step) - (checkpoint_step(resume_from) if resume_from is not None else 0),
        "num_processes": int(acc.num_processes),  # grpo.batch_size is per process: the prompts per step are both's product
        "max_pos_items": stage.max_pos_items,
        "positive_share": stage.positive_share,
        "n_prompts": len(records),
        "n_with_positives": n_with_positives(records),
        "train_seconds": round(train_s, 2),
        "rollout_seconds": round(rollout.stats.seconds, 2),
        "rollout_share": rollout.stats.seconds / train_s if train_s > 0 else None,
        "invalid_rate": rollout.stats.invalid_rate,
        "duplicate_items": rollout.stats.duplicates,
        "mean_reward": _mean([e["reward"] for e in entries]),
        "mean_zero_adv_share": _mean([e["zero_adv_share"] for e in entries]),
        "mean_components": {c: _mean([e["components"][c] for e in entries]) for c in COMPONENTS},
        "resumed_from": resume_from.name if resume_from is not None else None,
    }
    if rollout.stats.invalid:
        console.print(f"[red]GRPO stage {i}: {rollout.stats.invalid} invalid rollout item(s) (must be 0)[/]")
    if is_main:
        with atomic_path(sdir / "model") as tmp:
            acc.unwrap_model(trainer.model).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_vocab_meta(tmp, job.sid_map)
            record_precision(tmp, job.compute)
        # forgetting, stage by stage
        info["discernment"] = measure_discernment(
            sdir / "model", job.sid_map, sections.sft, sections.decode, sections.seed, job.samples,
            console=console, who=f"GRPO stage {i} ({stage.name})",
        )
        write_json(info, sdir / DONE_FILE)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        if i > 0:  # only the latest stage's weights are needed to resume or finish
            shutil.rmtree(job.work / f"stage_{i - 1}" / "model", ignore_errors=True)
        console.print(
            f"GRPO stage {i} ({stage.name}): {info['steps']} steps, mean reward {_fmt(info['mean_reward'], '{:.3f}')}, "
            f"zero-advantage groups {_fmt(info['mean_zero_adv_share'], '{:.0%}')}, rollout {info['rollout_share'] or 0:.0%} of time"
        )
    acc.wait_for_everyone()
    return _StageRun(info, rollout.stats.seconds, train_s)


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def link_or_copy(src: str, dst: str) -> str:
    """:func:`shutil.copytree`'s ``copy_function``: a hard link, or a copy where the filesystem refuses one
    (another device, a filesystem without links)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def publish_model(last_model: Path, out: Path) -> None:
    """``out`` (``grpo/model``) as a whole-or-nothing copy of the last stage's model, its files hard links to the
    stage's (copies only where links are refused).

    Why links: a full copy kept the weights twice (``grpo/stage_<last>/model`` is kept: a rerun whose stages all
    finished publishes from it, and an interrupted :func:`_save` leaves ``grpo/model`` to be made again), 1 GB more
    per Gemma-3-270M run, and cost a 1 GB write. Why safe: nothing writes a model file in place (every model dir is
    written whole to a temporary dir and renamed, :func:`conrec.io.atomic_path`), so neither name can change the
    other's files, and removing one name (a fresh plan clearing ``stage_*``) leaves the other's data. The directory
    itself is still made in a temporary dir and renamed into place: ``grpo/model`` is never half there."""
    with atomic_path(out) as tmp:
        shutil.copytree(last_model, tmp, copy_function=link_or_copy)


def _save(
    job: _Job, log: RewardLog, summaries: list[dict[str, Any]], done_now: list[_StageRun], last_model: Path, started: float
) -> dict[str, Any]:
    """Publish the last stage's model as the output (:func:`publish_model`), write ``stats.json``, mark the stage
    done; return the summary."""
    total_train_s = sum(r.train_seconds for r in done_now)
    total_rollout_s = sum(r.rollout_seconds for r in done_now)
    result: dict[str, Any] = {
        "model_dir": str(job.out),
        "reward_mode": job.reward_mode,
        "progressive": job.progressive,
        "stages": summaries,
        "steps": sum(int(s.get("steps", 0)) for s in summaries),
        "steps_this_run": sum(int(r.info["steps_this_run"]) for r in done_now),
        "train_seconds_this_run": round(total_train_s, 2),
        "rollout_share_this_run": total_rollout_s / total_train_s if total_train_s > 0 else None,
        "mean_zero_adv_share": _mean([e["zero_adv_share"] for e in log.entries]),
        "n_train_samples": job.train.height,
        "num_processes": int(job.state.num_processes),  # this call's; each stage's summary has the one that trained it
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not (last_model / "config.json").exists():
        raise StageInputError(f"the last GRPO stage's model {last_model} is missing; rerun with --no-resume")
    if job.is_main:
        publish_model(last_model, job.out)
        write_json(result, job.work / "stats.json")
        job.rd.mark_done("grpo", {"steps": result["steps"], "reward_mode": job.reward_mode, "progressive": job.progressive})
        job.console.print(f"GRPO: {result['steps']} steps over {len(job.stages)} stage(s) -> {shown(job.out)}", soft_wrap=True)
    job.state.wait_for_everyone()
    return result


def similarity_signal(
    rd: RunDir, sid_map: SidMap, fit_events: pl.DataFrame, grpo: GrpoConfig, required: bool,
    vectors: tuple[np.ndarray, str] | None = None,
) -> tuple[Any, str | None]:
    """(:class:`conrec.llm.training.rewards.ItemSimilarity`, vector source) for the ``sim`` / ``pos_sim`` components.

    Swing is fitted on ``fit_events``, the run's training events (the same rule as co-dislike and the
    baselines), so no valid/test label reaches the reward. ``reward.target: next`` (the conventional
    objective) gets no Swing extension: its target is the next negative alone. When the similarity
    reward is not the one optimised, the components are still computed (and logged) if the run has
    item vectors; ``(None, None)`` otherwise. ``vectors``: the (vectors, source) :func:`preflight` already read.
    """
    if vectors is None:
        try:
            vectors = item_vectors(rd.sid, sid_map.codes)
        except StageInputError:
            if required:
                raise
            return None, None
    vecs, source = vectors
    co_negatives = grpo.reward.co_negatives if grpo.reward.target == "future" else 0
    swing = Swing.fit(fit_events, sid_map.items, grpo.reward.swing) if co_negatives else None
    return ItemSimilarity(sid_map.items, vecs, swing, co_negatives), source


def check_group_size(num_generations: int, n_items: int) -> None:
    """A group holds ``num_generations`` distinct items: the catalogue must have that many."""
    if num_generations > n_items:
        raise ConfigError(
            f"grpo.num_generations ({num_generations}) exceeds the catalogue size ({n_items}): "
            "a group cannot hold that many distinct items"
        )


def build_rollout(grpo: GrpoConfig, tokenizer: Any, sid_map: SidMap, vocab: Any) -> ConstrainedRollout:
    """The rollout hook for this config (beam or distinct-sampling groups of G valid items)."""
    check_group_size(grpo.num_generations, len(sid_map))
    trie = sid_map.trie()
    topk = beam_topk(tokenizer, trie, vocab) if grpo.rollout == "beam" else sample_topk(tokenizer, trie, vocab, grpo.temperature)
    return ConstrainedRollout(
        tokenizer=tokenizer,
        topk=topk,
        item_ids=sid_map.items,
        item_token_ids=item_token_table(vocab, sid_map.codes),
        eos_id=int(tokenizer.eos_token_id),
        num_generations=grpo.num_generations,
    )


@dataclass(frozen=True)
class TrainerSpec:
    """What one stage's :class:`trl.GRPOTrainer` is built from (see :func:`_make_trainer`)."""

    policy: Any
    tokenizer: Any
    dataset: Any
    reward_funcs: Sequence[Any]
    reward_weights: Sequence[float]
    rollout: ConstrainedRollout
    callback: GrpoLogCallback
    grpo: GrpoConfig
    stage: GrpoStageConfig
    ckpt_dir: Path
    seed: int
    compute: ResolvedCompute


class TiedHeadGRPOTrainer(TiedHeadLoad, GRPOTrainer):
    """TRL's trainer, whose resume names no tied head as missing (:class:`TiedHeadLoad`)."""


def _make_trainer(spec: TrainerSpec) -> Any:
    grpo, stage = spec.grpo, spec.stage
    levels = int(spec.rollout._item_tokens.shape[1])
    args = GRPOConfig(
        output_dir=str(spec.ckpt_dir),
        per_device_train_batch_size=grpo.batch_size,
        gradient_accumulation_steps=1,
        num_generations=grpo.num_generations,
        max_completion_length=levels + 1,
        max_steps=stage.steps,
        learning_rate=grpo.learning_rate,
        lr_scheduler_type="constant",
        beta=grpo.beta,
        reward_weights=list(spec.reward_weights),
        scale_rewards="group",
        temperature=1.0,
        logging_steps=1,
        **trainer_save_args(grpo.save_steps, 1),
        seed=spec.seed,
        data_seed=spec.seed,
        report_to="none",
        disable_tqdm=True,
        disable_dropout=True,
        log_completions=False,
        **trainer_kwargs(spec.compute),  # device, mixed precision (rollouts too), checkpointing, compile, workers
    )
    trainer = TiedHeadGRPOTrainer(
        model=spec.policy,
        reward_funcs=list(spec.reward_funcs),
        args=args,
        train_dataset=spec.dataset,
        processing_class=spec.tokenizer,
        rollout_func=spec.rollout,
        callbacks=[spec.callback, CompleteCheckpointMarker(), NoCheckpointAtTheEnd()],
    )
    trainer.remove_callback(PrinterCallback)  # the rich bar + reward_log.json replace raw dict printing
    return trainer


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return float(np.mean(vals)) if vals else None


def main(argv: list[str] | None = None) -> None:
    """``python -m conrec.llm.training.grpo --config cfg.yaml`` (the entry point for ``accelerate launch -m``): the
    stage as ``conrec grpo`` runs it, inputs checked and the run's record updated (see the SFT entry point)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "-c", type=Path, default=None)
    parser.add_argument("--run-dir", "-r", type=Path, default=None)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--reward-mode", choices=REWARD_MODES, default=None, help="overrides grpo.reward.mode")
    parser.add_argument("--no-progressive", action="store_true", help="sets grpo.progressive: false")
    ns = parser.parse_args(argv)
    overrides: dict[str, Any] = {"run_dir": str(ns.run_dir)} if ns.run_dir else {}
    if ns.reward_mode is not None:
        overrides["grpo"] = {"reward": {"mode": ns.reward_mode}}
    if ns.no_progressive:
        overrides.setdefault("grpo", {})["progressive"] = False
    from conrec.pipeline import run_stage_or_exit

    run_stage_or_exit(lambda: load_config(ns.config, overrides or None), "grpo", resume=not ns.no_resume)


if __name__ == "__main__":  # pragma: no cover
    main()
