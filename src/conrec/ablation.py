"""Ablations reproduced by one command (``conrec ablate --what grpo|prompts|paper``).

``grpo`` isolates CoNRec's two RL ingredients one at a time, each row adding one:

* ``sft``: the SFT model, no RL;
* ``grpo_next_neg``: one GRPO stage with full context, reward = exact next-negative hit (the
  conventional target);
* ``grpo_future``: the same single full-context stage, reward = N-day future-negative hit +
  co-dislike + SID-prefix credit (+ liked penalty);
* ``grpo_progressive``: the progressive schedule of ``grpo.stages`` with that reward (the run's own
  GRPO model). The single-stage variants train for the summed steps of the schedule, so every GRPO
  row gets the same optimiser budget.

``prompts`` trains one SFT model per prompt layout (``neg_only``, ``segmented``, ``merged``,
``timeline``, ``neg_timeline``) with the same alignment tasks and schedule, each layout trained by its
own history task: the dense timeline windows for the timeline layouts, the next/future-negative
prompts for the others (the timeline rows with the timeline task's dense loss, whatever the run's). Whether
"context-discerning" is better done by segments or by feedback tokens is then a measured row, not an assumption.
The run itself is run up to its SFT only (no row shows its GRPO model); the baselines come from its eval when
that is current, else from a child run (``ablations/prompts/baselines``), as for ``paper``.

Every row's config is checked (validators, SFT settings) before anything is trained or written.

``paper`` reproduces the ladder of CoNRec's Table 2 (FHR@20 on Taobao), each row adding one
component to the previous one (:func:`paper_ladder`):

* ``sid_title``: SFT with the history tasks and SID <-> title translation only;
* ``alignment``: + item alignment (SID -> category and the discernment task);
* ``progressive``: + progressive GRPO with the paper's schedule (``grpo.stages: paper``; steps per
  stage = the run's total GRPO steps / 3), rewarded by similarity to the *next* negative only;
* ``future_reward``: the reward's target becomes the N-day future negatives + Swing co-negatives;
* ``pos_penalty``: + the future-positive penalty (``gamma``).

Every row is evaluated with the normal evaluation (bootstrap CIs over the same points, or the same users
where one holds several points; paired differences vs the previous row and vs the best baseline), with its training and evaluation time
and the discernment accuracy (forgetting vs the SFT model it started from); the paper's Taobao
numbers are quoted beside ours. Only the data and SID stages of the run itself are run first (the run's
own SFT/GRPO models are not rows of this ladder); the baselines are evaluated in a child run of their own
(``ablations/paper/baselines``), so the run's config and eval stage stay as they were.

Every row is a child run (:mod:`conrec.experiments`) in ``run_dir/ablations/<what>/<variant>/``: the
stages its configuration leaves unchanged are links to the run's own (or, for the paper ladder's
GRPO rows, to the ``alignment`` row's SFT model), the others run there through the normal stages,
and its model is scored by the normal eval stage on the same points (same split, samples, K and
horizons); the table keeps the run's baselines beside them. A row already run with the same
configuration is current and reused (its stages are skipped, as in ``conrec demo``). Results:
``run_dir/ablations/<what>.md`` and ``.json``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from conrec.ablation_stale import WHAT, built_on, mark_stale_tables, remove_table_temps
from conrec.config import PipelineConfig
from conrec.console_text import shown
from conrec.data.windows import measurable_horizons
from conrec.errors import ConfigError, StageInputError, spoken_list
from conrec.experiments import evaluation_only, parent_of, run_child, stage_seconds
from conrec.io import read_json, read_parquet, write_json, write_text
from conrec.llm.config import DENSE_LOSS, NEG_SEGMENT_VARIANTS, PROMPT_VARIANTS, GrpoConfig
from conrec.pipeline import is_current, run_pipeline  # one direction only: the pipeline never imports ablations
from conrec.run_lock import holding_run
from conrec.runs import PARENT_FILE, RunDir

PAPER_FHR20 = {"sid_title": 0.0364, "alignment": 0.0382, "progressive": 0.0393, "future_reward": 0.0434, "pos_penalty": 0.0441}
"""FHR@20 of each row of CoNRec's Table 2 (Taobao, Qwen3-14B), quoted beside ours for reference."""
_UP_TO = {"sft": ("data", "sid", "sft", "eval"), "grpo": ("data", "sid", "sft", "grpo", "eval")}
"""The stages a row runs (in its child run) to evaluate LM ``sft`` or ``grpo``."""


def split_note(cfg: PipelineConfig) -> str:
    """What every ablation table, and its console summary, says about the split its rows were scored on.

    Why: the tables exist to choose between components, and settings are chosen on the valid split (test is scored
    once, for the chosen recipe); every shipped ablation config scores test (``train_until: test``), and the table
    said only "split `test`"."""
    if cfg.eval.split == "test":
        return ("Scored on the test split: a report, not a basis for choosing a setting; settings are chosen on valid "
                "(rerun with data.split.train_until: valid and eval.split: valid to choose between these rows).")
    return "Scored on the valid split, where settings are chosen; the test split stays for the chosen setting's final run."


def _with_prompt_variant(cfg: PipelineConfig, variant: str) -> PipelineConfig:
    """The run's SFT with another layout, trained by that layout's history task: the timeline task
    (dense windows, with its loss :data:`DENSE_LOSS`, whatever the run's) for the timeline layouts, the
    next/future-negative prompts for the others; the alignment tasks and the training schedule stay the run's, but
    for ``sft.train.history_loss``, 0 in the layouts without a ``<neg>`` segment for it to train on (merged, timeline).
    (A run with ``mask_history: true`` or ``sid_softmax: vocab`` gave timeline rows the timeline task refuses, and one
    with ``history_loss`` merged and timeline rows SFT refuses: the ablation stopped with no table.)"""
    from conrec.llm.config import TaskMix

    prompt = cfg.sft.prompt.model_copy(update={"variant": variant})
    tasks, default, train = cfg.sft.tasks, TaskMix(), cfg.sft.train
    if not prompt.has_neg_segment:
        train = train.model_copy(update={"history_loss": 0.0})
    if prompt.is_timeline:
        tasks = tasks.model_copy(update={"next_negative": 0.0, "future_negative": 0.0, "timeline": tasks.timeline or 1.0})
        train = train.model_copy(update=DENSE_LOSS)
    elif tasks.timeline > 0 or tasks.next_negative + tasks.future_negative == 0:
        tasks = tasks.model_copy(
            update={"timeline": 0.0, "next_negative": tasks.next_negative or default.next_negative,
                    "future_negative": tasks.future_negative or default.future_negative}
        )
    return cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"prompt": prompt, "tasks": tasks, "train": train})})


HISTORY_TASKS = ("next_negative", "future_negative", "timeline")
"""The SFT tasks that train on the user's history, one of which each prompt layout is trained by."""


def history_task(cfg: PipelineConfig) -> str:
    """The history tasks ``cfg``'s SFT trains, with their weights: ``timeline 1`` or ``next_negative 1, future_negative 1``."""
    tasks = cfg.sft.tasks
    return ", ".join(f"{k} {getattr(tasks, k):g}" for k in HISTORY_TASKS if getattr(tasks, k) > 0) or "none"


def _prompt_notes(cfg: PipelineConfig) -> list[str]:
    """What the table of ``--what prompts`` says about rows whose settings differ from the run's beyond the layout:
    the history task (each layout is trained by its own: a timeline run's neg_only row trains next/future-negative
    prompts, and with ``epochs`` another number of examples and steps), the loss, ``history_loss``."""
    tr, notes = cfg.sft.train, []
    changed_task: dict[str, list[str]] = {}
    for name, _, row, _ in prompt_variants(cfg):
        if history_task(row) != history_task(cfg):
            changed_task.setdefault(history_task(row), []).append(name)
    for task, names in changed_task.items():
        steps = "examples and, under sft.train.epochs, steps" if tr.max_steps == -1 else "examples"
        notes.append(f"The {spoken_list(names)} row{'s' if len(names) > 1 else ''} train{'' if len(names) > 1 else 's'} the history task "
                     f"{task} instead of the run's {history_task(cfg)}: each layout is trained by its own history task (so on "
                     f"another number of {steps}), and such a row measures its layout and its task together.")
    changed = {k: v for k, v in DENSE_LOSS.items() if getattr(tr, k) != v}
    if changed:
        run_side = ", ".join(f"{k}: {str(getattr(tr, k)).lower()}" for k in changed)
        rows_side = ", ".join(f"{k}: {str(v).lower()}" for k, v in changed.items())
        notes.append(f"The timeline rows train with the timeline task's dense loss ({rows_side}), not the run's {run_side}, "
                     "which the timeline task cannot train with.")
    if tr.history_loss > 0:
        bare = [v for v in PROMPT_VARIANTS if v not in NEG_SEGMENT_VARIANTS]
        notes.append(f"The {' and '.join(bare)} rows train with sft.train.history_loss: 0, not the run's {tr.history_loss:g}: "
                     "their prompts have no <neg> segment for it to train on.")
    return notes


def prompt_variants(cfg: PipelineConfig) -> list[tuple[str, str, PipelineConfig, str]]:
    """``--what prompts``'s rows: (name, what it is, config, model), one SFT model per layout."""
    rows = [(v, _with_prompt_variant(cfg, v)) for v in PROMPT_VARIANTS]
    return [(f"sft_{v}", f"SFT, {v} prompt, history task {history_task(row)}" + ("" if history_task(row) == history_task(cfg) else " (not the run's)"),
             row, "sft") for v, row in rows]


def check_rows(what: str, rows: list[tuple[str, PipelineConfig]], training: Collection[str] | None = None) -> None:
    """Refuse, before anything is trained, a row whose config the stages would refuse: the config's validators
    (each row is built with ``model_copy``, which runs none) and the SFT stage's settings checks
    (:func:`conrec.llm.training.sft.check_settings`), with the backbone's for the rows named in ``training`` (None:
    every row; :func:`rows_training`). A bad row stopped the ablation when its turn came, after the
    run and every earlier row had trained, with no table; a machine without the backbone refused an ablation
    whose rows were all trained already (it loads only their SFT and GRPO models)."""
    from pydantic import ValidationError

    from conrec.config import validation_problem
    from conrec.llm.training.sft import check_settings
    from conrec.stages import STAGE_REGISTRY

    for name, vcfg in rows:
        try:
            check_settings(STAGE_REGISTRY["sft"].section_of(vcfg), loadable=training is None or name in training)
            PipelineConfig.model_validate(vcfg.model_dump(mode="json"))
        except (ConfigError, StageInputError) as exc:
            raise type(exc)(f"`conrec ablate --what {what}`, row {name}: {exc}") from None
        except ValidationError as exc:  # the row's own settings: no file or overrides to name
            problems = "; ".join(validation_problem(e) for e in exc.errors())
            raise ConfigError(f"`conrec ablate --what {what}`, row {name}: invalid config: {problems}") from None


def rows_training(cfg: PipelineConfig, what: str, rows: list[tuple[str, PipelineConfig]]) -> set[str]:
    """The rows whose SFT this ablation would train: its child run's (``ablations/<what>/<row>``) is not current (a
    row whose child run links another's SFT follows that link). Every row when the run's own SFT, which ``--what
    grpo`` and ``prompts`` run first and rows link, is not current; the backbone is the same for all."""
    root = RunDir(cfg.run_dir).root / "ablations" / what
    if what != "paper" and not is_current(RunDir(cfg.run_dir), cfg, "sft"):
        return {name for name, _ in rows}
    folders = {name: root / (name if what == "paper" else name.removeprefix("sft_")) for name, _ in rows}
    return {name for name, vcfg in rows
            if not is_current(RunDir(folders[name]), vcfg.model_copy(update={"run_dir": folders[name]}), "sft")}


def _with_grpo(cfg: PipelineConfig, mode: str, progressive: bool) -> PipelineConfig:
    reward = cfg.grpo.reward.model_copy(update={"mode": mode})
    return cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"reward": reward, "progressive": progressive})})


def grpo_variants(cfg: PipelineConfig) -> list[tuple[str, str, PipelineConfig, str]]:
    """``--what grpo``'s rows: (name, what it is, config, model). Each row sets what it says (the progressive row
    was the run as it was, progressive or not); where that is the run's own setting, the child run links the run's
    model instead of training it (the same fingerprint)."""
    return [
        ("sft", "SFT only", cfg, "sft"),
        ("grpo_next_neg", "GRPO, next-negative reward, one full-context stage", _with_grpo(cfg, "next_neg", False), "grpo"),
        ("grpo_future", "GRPO, future + collaborative reward, one full-context stage", _with_grpo(cfg, "future_collab", False), "grpo"),
        ("grpo_progressive", "Progressive GRPO, future + collaborative reward", _with_grpo(cfg, "future_collab", True), "grpo"),
    ]


def _variants(cfg: PipelineConfig, what: str) -> list[tuple[str, str, PipelineConfig, str]]:
    """The rows of ``--what grpo`` or ``prompts``."""
    return grpo_variants(cfg) if what == "grpo" else prompt_variants(cfg)


def _row(parent: Path, vcfg: PipelineConfig, folder: Path, model: str, console: Console) -> RunDir:
    """One variant as a child run of ``parent`` in ``folder``: its unchanged stages linked, the others
    run there, its LM ``model`` scored by the eval stage (whose predictions :func:`_points` rescores
    beside the baselines, for the paired differences). Returns the child run."""
    child = evaluation_only(vcfg, folder, [model])
    run_child(parent, child, stages=_UP_TO[model], console=console)
    return RunDir(folder)


def _row_info(rd: RunDir, model: str) -> dict[str, Any]:
    """Train and eval seconds of a row's child run (a linked stage's are those of the run it was made in)."""
    stats_path = rd.stage_dir(model) / "stats.json"
    return {
        "train_seconds": stage_seconds(rd.root, model),
        "eval_seconds": stage_seconds(rd.root, "eval"),
        "stats": read_json(stats_path) if stats_path.exists() else {},
    }


def _eval_inputs(cfg: PipelineConfig) -> dict[str, Any]:
    """What scoring predictions needs, chosen as the eval stage chooses it: the split's samples, the
    items, the training dislike counts (LIF's long tail), K and the horizons."""
    from conrec.eval.stage import dislike_counts, fit_events_for, select_samples

    rd = RunDir(cfg.run_dir)
    ecfg = cfg.eval
    samples_all = read_parquet(rd.samples, what="samples")
    stats_path = rd.data / "stats.json"
    fit_events, _ = fit_events_for(
        read_parquet(rd.events, what="events"), cfg.data.split, read_json(stats_path) if stats_path.exists() else None,
        ecfg.split, samples_all.filter(pl.col("split") == ecfg.split),
    )
    items = read_parquet(rd.items, what="items")
    samples = select_samples(samples_all, ecfg.split, ecfg.max_samples, ecfg.seed)
    return {
        "samples": samples,
        "users": samples["user_id"].cast(pl.String).to_list(),  # what the bootstrap groups by (several points per user)
        "items": items,
        "catalogue": items["item_id"].cast(pl.String).to_list(),
        "counts": dislike_counts(fit_events),
        "ks": sorted(set(ecfg.ks)),
        "horizons": measurable_horizons(ecfg.horizons, cfg.data.split.max_horizon_days)[0],  # the eval stage's policy
    }


def _points(rd: RunDir, name: str, e: dict[str, Any], horizons: list[float]) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, per-point values) of model ``name`` recomputed from a run's ``eval/predictions`` (for the CIs)."""
    from conrec.eval.stage import all_metrics_with_points

    preds = read_parquet(rd.predictions / f"{name}.parquet")
    return all_metrics_with_points(preds, e["samples"], e["ks"], e["items"].height, horizons, e["counts"], e["catalogue"])


def _baseline_rows(cfg: PipelineConfig, rd: RunDir, e: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]], dict[str, Any]]:
    """(baselines, their metrics without the run's intervals, their per-point values): the rows every
    ablation table compares its variants with, on the same points."""
    baseline_metrics = read_json(rd.eval / "metrics.json", what="eval metrics")
    baselines = [b for b in cfg.eval.baselines if b in baseline_metrics]
    metrics: dict[str, dict[str, Any]] = {b: {k: v for k, v in baseline_metrics[b].items() if not k.endswith(("_ci", "_diff", "_vs", "_ref"))}
                                          for b in baselines}
    points: dict[str, Any] = {b: _points(rd, b, e, [])[1] for b in baselines if (rd.predictions / f"{b}.parquet").exists()}
    return baselines, metrics, points


def _slate_metrics(rd: RunDir) -> dict[str, Any] | None:
    """The Candidate Acc. of the models the run's own eval stage put on slates (its baselines, and its LMs where a
    row is the run's model), for the summary table; the variants' child runs score no slates ("–")."""
    path = rd.eval / "slate_metrics.json"
    return read_json(path, what="slate metrics").get("metrics") if path.exists() else None


def _add_intervals(cfg: PipelineConfig, metrics: dict[str, dict[str, Any]], points: dict[str, Any], baselines: list[str],
                   users: list[str] | None = None) -> None:
    """CIs of every row and the variants' paired differences to the best baseline, as the eval stage adds them.

    Why here: each variant's child run evaluates its LM alone (no baselines), so its own metrics hold no
    difference; read as they are, every variant was shown as the reference ("ref") in the summary.
    """
    from conrec.eval.compare import add_intervals

    b = cfg.eval.bootstrap
    add_intervals(metrics, points, baselines, [f"{m}@{kk}" for kk in sorted(set(cfg.eval.ks)) for m in b.metrics],
                  b.resamples, b.level, b.seed, users)


def _paired_difference(cfg: PipelineConfig, points: dict[str, Any], name: str, ref: str, key: str,
                       users: list[str] | None = None) -> tuple[float, list[float]] | None:
    """(difference, CI) of row ``name`` minus row ``ref`` in ``key`` on the same resampled points (the resamples the
    CIs use: ``eval.bootstrap``'s seed): the paper table's "Δ prev" and the other tables' "Δ vs" their reference row.
    None under :data:`~conrec.eval.compare.MIN_POINTS` points, where the eval stage gives no paired difference either."""
    from conrec.eval.bootstrap import paired_diff_ci, resample
    from conrec.eval.compare import MIN_POINTS
    from conrec.eval.metrics import nan_mean

    a, r = points[name][key], points[ref][key]
    if len(a) < MIN_POINTS:
        return None
    b = cfg.eval.bootstrap
    idx = resample(len(a), users, b.resamples, b.seed)  # the points, or the users when one holds several
    return nan_mean(a) - nan_mean(r), list(paired_diff_ci(a, r, idx, b.level))


def _diff_cell(diff: tuple[float, list[float]] | None) -> str:
    """``+0.012 [-0.020, +0.045]`` ('–' without one)."""
    return "–" if diff is None else f"{diff[0]:+.3f} [{diff[1][0]:+.3f}, {diff[1][1]:+.3f}]"


def _best_baseline_cell(m: dict[str, Any], key: str) -> str:
    """``+0.012 [-0.020, +0.045] vs swing``: a row's paired difference to the best baseline in ``key``, as the eval
    stage computed it ('–' without one)."""
    if f"{key}_diff" not in m:
        return "–"
    return f"{_diff_cell((m[key + '_diff'], m[key + '_diff_ci']))} vs {m.get(key + '_vs')}"


def _baselines_child(cfg: PipelineConfig, root: Path, console: Console) -> RunDir:
    """The baselines evaluated in a child run ``root/baselines`` (an eval stage without LM, the run's data and SIDs
    linked). Why not in the run itself: that overwrote its config (eval.models: []) and its eval stage, which later
    commands then took as current, without the run's own LM rows."""
    baselines_cfg = cfg.model_copy(update={"run_dir": root / "baselines", "eval": cfg.eval.model_copy(update={"models": []})})
    run_child(RunDir(cfg.run_dir).root, baselines_cfg, stages=("data", "sid", "eval"), console=console)
    return RunDir(root / "baselines")


def paper_ladder(cfg: PipelineConfig) -> list[tuple[str, str, PipelineConfig, bool]]:
    """(name, what it adds, the row's config, trains GRPO) for each row of the paper's Table 2 ladder.

    Weights the run leaves at 0 get the defaults (SID -> category 0.2, discernment 1.0, 5 co-negatives,
    gamma 0.5), so every row really adds its component.
    """
    tasks = cfg.sft.tasks
    t_title = tasks.model_copy(update={"sid_to_category": 0.0, "discernment": 0.0,
                                       "sid_to_title": tasks.sid_to_title or 0.3, "title_to_sid": tasks.title_to_sid or 0.3})
    t_align = t_title.model_copy(update={"sid_to_category": tasks.sid_to_category or 0.2, "discernment": tasks.discernment or 1.0})
    steps = max(1, round(sum(st.steps for st in cfg.grpo.stages) / 3))
    reward = cfg.grpo.reward
    r_next = reward.model_copy(update={"mode": "similarity", "target": "next", "co_negatives": 0, "gamma": 0.0})
    r_future = r_next.model_copy(update={"target": "future", "co_negatives": reward.co_negatives or 5})
    r_pos = r_future.model_copy(update={"gamma": reward.gamma or 0.5})

    def variant(task_mix: Any, rew: Any) -> PipelineConfig:
        grpo = cfg.grpo.model_copy(update={"stages": GrpoConfig(stages={"preset": "paper", "steps": steps}).stages,  # last: SFT's context
                                           "reward": rew, "progressive": True})  # the run's may be off: the rows say progressive
        return cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"tasks": task_mix}), "grpo": grpo})

    return [
        ("sid_title", "SFT, SID <-> title translation only", variant(t_title, reward), False),
        ("alignment", "+ item alignment (SID -> category, discernment)", variant(t_align, reward), False),
        ("progressive", "+ progressive GRPO (paper schedule), next-negative similarity reward", variant(t_align, r_next), True),
        ("future_reward", "+ future-negative reward (N-day set + Swing co-negatives)", variant(t_align, r_future), True),
        ("pos_penalty", "+ future-positive penalty", variant(t_align, r_pos), True),
    ]


def _run_paper(cfg: PipelineConfig, console: Console, started: float) -> dict[str, dict[str, Any]]:
    """``--what paper`` (module docstring): the Table 2 ladder, one child run per row."""
    from conrec.eval.bootstrap import resampled_unit
    from conrec.eval.compare import ci_label
    from conrec.eval.report import markdown_table
    from conrec.eval.summary import summary_table
    from conrec.llm.training.discernment import chance_bound, forgetting, made_no_update

    rd = RunDir(cfg.run_dir)
    root = rd.root / "ablations" / "paper"
    run_pipeline(cfg, stages=("data", "sid"), console=console)
    baselines_run = _baselines_child(cfg, root, console)
    e = _eval_inputs(cfg)
    baselines, metrics, points = _baseline_rows(cfg, baselines_run, e)
    rows: list[dict[str, Any]] = []
    sources = [baselines_run]  # the runs the table is read from (ablation_stale.built_on)
    sft_acc: float | None = None
    sft_questions = 0
    for name, label, vcfg, with_grpo in paper_ladder(cfg):
        console.rule(f"[bold]ablation paper: {name}")
        row_started = time.perf_counter()
        model = "grpo" if with_grpo else "sft"
        parent = root / "alignment" if with_grpo else rd.root  # GRPO rows start from the alignment row's SFT model
        child = _row(parent, vcfg, root / name, model, console)
        sources.append(child)
        info = _row_info(child, model)
        metrics[name], points[name] = _points(child, model, e, e["horizons"])
        stages = (info["stats"].get("stages") or []) if with_grpo else []
        no_update = with_grpo and made_no_update(stages)  # the SFT model unchanged: 0.0% forgetting would mean nothing
        if with_grpo:
            acc = ((stages[-1].get("discernment") or {}) if stages else {}).get("accuracy")
        else:
            acc = (info["stats"].get("discernment") or {}).get("accuracy")
            sft_acc, sft_questions = acc, int((info["stats"].get("discernment") or {}).get("n_questions") or 0)
        if acc is not None:
            metrics[name]["discern_acc"] = acc
        rows.append({"variant": name, "what": label, "train_seconds": info["train_seconds"], "eval_seconds": info["eval_seconds"],
                     "row_seconds": round(time.perf_counter() - row_started, 1), "discern_acc": acc,
                     "forgetting": forgetting(sft_acc, acc) if with_grpo and not no_update else None, "no_update": no_update,
                     "zero_adv_share": info["stats"].get("mean_zero_adv_share") if with_grpo else None,
                     "paper_FHR@20": PAPER_FHR20[name]})

    ecfg = cfg.eval
    ks = sorted(set(ecfg.ks))
    k = max(ks)
    key = f"FHR@{k}"
    b = ecfg.bootstrap
    _add_intervals(cfg, metrics, points, baselines, e["users"])
    n_points = len(next(iter(points[rows[0]["variant"]].values())))
    for prev, row in zip(rows, rows[1:]):
        if (diff := _paired_difference(cfg, points, row["variant"], prev["variant"], key, e["users"])) is not None:
            row["diff_prev"], row["diff_prev_ci"] = diff
    seconds = round(time.perf_counter() - started, 1)

    def cell(v: Any, fmt: str = "{:.3f}") -> str:
        return "–" if v is None else fmt.format(v)

    def ci(row: dict[str, Any], name: str) -> str:
        m = metrics[row["variant"]]
        lo, hi = m.get(f"{name}_ci", [None, None])
        return f"{m[name]:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m[name]:.3f}"

    label = ci_label(metrics)
    lines = [
        "# Ablation: the CoNRec paper's Table 2 ladder", "",
        f"Run `{rd.root}`, seed {cfg.seed}, split `{ecfg.split}` ({n_points} points), future window N = "
        f"{cfg.data.split.horizon_days:g} days; {100 * b.level:g}% bootstrap CIs over the {resampled_unit(e['users'])} ({b.resamples} resamples). "
        "Each row adds one component to the row above; Δ prev = paired difference to the row above. "
        "Paper = CoNRec's FHR@20 on Taobao (Qwen3-14B; not comparable in level, only in direction).", "",
        split_note(cfg), "",
        f"| row | adds | {key} [{label}] | Δ prev [{label}] | Δ vs best baseline [{label}] | HR@{k} | LUF@{k} | discern acc | forgetting | "
        "zero-advantage groups | paper FHR@20 | train s | row s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = metrics[r["variant"]]
        dprev = _diff_cell((r["diff_prev"], r["diff_prev_ci"]) if "diff_prev" in r else None)
        dbest = _best_baseline_cell(m, key)
        lines.append(
            f"| {r['variant']} | {r['what']} | {ci(r, key)} | {dprev} | {dbest} | {cell(m.get(f'HR@{k}'))} | "
            f"{cell(m.get(f'LUF@{k}'))} | {cell(r['discern_acc'])} | {'– (no update)' if r['no_update'] else cell(r['forgetting'], '{:.1%}')} | "
            f"{cell(r['zero_adv_share'], '{:.0%}')} | {r['paper_FHR@20']:.4f} | {_seconds_cell(r['train_seconds'], '–')} | {_seconds_cell(r['row_seconds'], '–')} |")
    best = max(baselines, key=lambda n: metrics[n].get(key, -1.0)) if baselines else None
    if best is not None:
        lines.append(f"| ({best}: best baseline) | | {ci({'variant': best}, key)} | | | {cell(metrics[best].get(f'HR@{k}'))} | "
                     f"{cell(metrics[best].get(f'LUF@{k}'))} | | | | | | |")
    if any(r["no_update"] for r in rows):
        lines += ["", "No update: every GRPO group of that row had zero advantage (all rewards equal), so its model is the "
                  "SFT model it started from, and its forgetting is not a result."]
    if sft_acc is not None and sft_questions and sft_acc <= chance_bound(sft_questions):
        lines += ["", f"The SFT rows' discernment accuracy is within chance on these {sft_questions} questions (0.25 + 2 "
                  "standard errors), so the forgetting column measures nothing here."]
    lines += ["", "All models:", "", markdown_table(metrics, ks), "",
              f"Total {seconds:.1f} s (data/SID/baselines included). train s = the row's own training (GRPO rows start from "
              "the `alignment` SFT model, whose time is not repeated); row s = training + evaluation of the row."]
    write_text("\n".join(lines) + "\n", rd.root / "ablations" / "paper.md")
    write_json({"metrics": metrics, "variants": rows, "seconds": seconds, "built_on": built_on(rd, sources)},
               rd.root / "ablations" / "paper.json")
    console.print(summary_table(metrics, ks, _slate_metrics(baselines_run)))
    _print_table_path(cfg, rd.root / "ablations" / "paper.md", console)
    return metrics


def _seconds_cell(seconds: float | None, missing: str) -> str:
    """A table's seconds, one decimal (the stages record them so): ``15.5``, ``5.0``, never ``5`` beside ``9.9``
    (``{:g}`` dropped a whole number's decimal); ``missing`` when not recorded."""
    return missing if seconds is None else f"{seconds:.1f}"


def _print_table_path(cfg: PipelineConfig, path: Path, console: Console) -> None:
    """Where the table was written, and the split it was scored on (:func:`split_note`)."""
    console.print(f"ablation table: {shown(path)}", soft_wrap=True)
    console.print(f"[yellow]{split_note(cfg)}[/]" if cfg.eval.split == "test" else split_note(cfg), soft_wrap=True)


def refuse_child_run(run_dir: str | Path, what: str) -> None:
    """Refuse to ablate a child run (an ablation row, a learning-curve point: its ``parent.json``), naming its parent.

    Why: its config is an evaluation-only variant (``eval.baselines: []``, slates off), so the nested rows had no
    baseline to be compared with (every "Δ vs best baseline" was "–"), and it read the parent's linked stages
    without holding the parent."""
    if not (Path(run_dir) / PARENT_FILE).is_file():
        return
    parent = parent_of(run_dir)  # None: unreadable, still a child run
    of = f"of {parent}" if parent is not None else "of another run"
    hint = f"conrec ablate -r {shlex.quote(str(parent))} --what {what}" if parent is not None else "conrec ablate -r PARENT"
    raise ConfigError(f"{run_dir} is a child run {of} (a row of an ablation or a learning-curve point); ablate the parent: {hint}")


def run(cfg: PipelineConfig, what: str, console: Console | None = None) -> dict[str, dict[str, float]]:
    """Train (or reuse) every variant of ``what``, evaluate them, write and print the table."""
    from conrec.eval.preflight import refuse_scoring_trained_labels

    if what not in WHAT:
        raise ConfigError(f"unknown ablation {what!r}; choose one of {', '.join(WHAT)}")
    refuse_child_run(cfg.run_dir, what)
    refuse_scoring_trained_labels(cfg.data.split, cfg.eval.split, ["sft"])  # every table scores LMs: before any trains
    if what in ("grpo", "paper") and cfg.sft.copy_bias.enabled:  # before any training (it failed after the SFT rows)
        raise ConfigError(f"`conrec ablate --what {what}` has GRPO rows, and GRPO cannot train a model with sft.copy_bias; "
                          "ablate a config without it, or use --what prompts")
    rows = [(n, c) for n, _, c, _ in paper_ladder(cfg)] if what == "paper" else [(n, c) for n, _, c, _ in _variants(cfg, what)]
    check_rows(what, rows, rows_training(cfg, what, rows))  # before the run is touched: a refused row stopped it partway
    console = console or Console()
    started = time.perf_counter()
    # the run is held for the whole ablation: another conrec command retrained its SFT under the rows that link
    # it, and a second ablation's table replaced this one's file
    with holding_run(cfg.run_dir):
        if n := remove_table_temps(cfg.run_dir):  # before it writes a table: what a killed write of one left
            console.print(f"[dim]ablate: removed {n} temporary output(s) left by an interrupted write ({n} in ablations/)[/]")
        # the table it rewrites, and any other whose stages were run again since, say so until rewritten
        mark_stale_tables(cfg.run_dir, WHAT, console, starting=what)
        result = _run_paper(cfg, console, started) if what == "paper" else _run_rows(cfg, what, console, started)
        mark_stale_tables(cfg.run_dir, WHAT, console)  # one whose stages this ablation ran again (the run's data, say)
        return result


def reference_row(cfg: PipelineConfig, what: str) -> tuple[str, str]:
    """(the row every other row of ``--what grpo`` or ``prompts`` is compared with, why that one): the SFT model the
    GRPO rows start from; the layout the run itself trains. The tables gave only "Δ vs best baseline", so whether a
    row beat its reference was left to two overlapping, unpaired CIs."""
    if what == "grpo":
        return "sft", "the model every GRPO row starts from"
    return f"sft_{cfg.sft.prompt.variant}", "the run's own prompt layout"


def _run_rows(cfg: PipelineConfig, what: str, console: Console, started: float) -> dict[str, dict[str, float]]:
    """``--what grpo`` or ``prompts``: the run itself, then one child run per variant, then the table."""
    from conrec.eval.bootstrap import resampled_unit
    from conrec.eval.compare import ci_label
    from conrec.eval.report import markdown_table
    from conrec.eval.summary import summary_table

    rd = RunDir(cfg.run_dir)
    root = rd.root / "ablations" / what
    if what == "grpo":  # the run itself first (skipped where current): baselines, SFT and progressive GRPO are rows too
        run_pipeline(cfg, console=console)
        baselines_run = rd
    else:
        # the rows are SFT models: the run up to its SFT (the row of its own layout links it), never its GRPO, which
        # no row shows (it was trained for nothing); its baselines from its eval when that is current, else from a
        # child run, as --what paper does (an eval of the run needs its GRPO model, or a config the run was not made with)
        run_pipeline(cfg, stages=("data", "sid", "sft"), console=console)
        baselines_run = rd if is_current(rd, cfg, "eval") else _baselines_child(cfg, root, console)
    e = _eval_inputs(cfg)
    baselines, metrics, points = _baseline_rows(cfg, baselines_run, e)
    rows: list[dict[str, Any]] = []
    sources = [baselines_run]  # the runs the table is read from (ablation_stale.built_on)

    variants = _variants(cfg, what)
    own: dict[str, str] = {}  # rows whose model is the run's own (their Candidate Acc. is the run's eval's)
    for name, label, vcfg, model in variants:
        console.rule(f"[bold]ablation {what}: {name}")
        child = _row(rd.root, vcfg, root / name.removeprefix("sft_"), model, console)
        sources.append(child)
        metrics[name], points[name] = _points(child, model, e, e["horizons"])
        info = _row_info(child, model)
        if child.stage_dir(model).resolve() == rd.stage_dir(model).resolve():  # the run's own model, linked
            own[name] = model
        zero = info["stats"].get("mean_zero_adv_share") if model == "grpo" else None
        rows.append({"variant": name, "what": label, "train_seconds": info["train_seconds"],
                     "eval_seconds": info["eval_seconds"], "zero_adv_share": zero})

    _add_intervals(cfg, metrics, points, baselines, e["users"])
    ks = sorted(set(cfg.eval.ks))
    key = f"FHR@{ks[-1]}"
    ref, why_ref = reference_row(cfg, what)
    for r in rows:  # each row against the table's reference row, on the same resampled points
        if r["variant"] != ref and (paired := _paired_difference(cfg, points, r["variant"], ref, key, e["users"])) is not None:
            r["diff_ref"], r["diff_ref_ci"] = paired
    seconds = round(time.perf_counter() - started, 1)
    label = ci_label(metrics)
    lines = [
        f"# Ablation: {what}", "",
        f"Run `{rd.root}`, seed {cfg.seed}, split `{cfg.eval.split}`, future window N = {cfg.data.split.horizon_days:g} days. "
        f"Δ vs {ref} = paired difference to the {ref} row ({why_ref}), on the same resampled {resampled_unit(e['users'])}.", "",
        split_note(cfg), "",
        markdown_table(metrics, ks), "",
        f"| variant | what | FHR@{ks[-1]} [{label}] | Δ vs {ref} [{label}] | Δ vs best baseline [{label}] | train s | eval s | "
        "zero-advantage groups |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m = metrics[r["variant"]]
        zero = "" if r["zero_adv_share"] is None else f"{r['zero_adv_share']:.0%}"
        train, evs = _seconds_cell(r["train_seconds"], "?"), _seconds_cell(r["eval_seconds"], "?")
        lo, hi = m.get(f"{key}_ci", (None, None))
        fhr = f"{m[key]:.3f}" + ("" if lo is None else f" [{lo:.3f}, {hi:.3f}]")
        diff = _best_baseline_cell(m, key)
        dref = "(reference)" if r["variant"] == ref else _diff_cell((r["diff_ref"], r["diff_ref_ci"]) if "diff_ref" in r else None)
        lines.append(f"| {r['variant']} | {r['what']} | {fhr} | {dref} | {diff} | {train} | {evs} | {zero} |")
    if what == "prompts" and (notes := _prompt_notes(cfg)):
        lines += ["", *notes]
    lines += ["", f"Total {seconds:.1f} s. Each row is a child run; the train seconds of a row whose model is the run's own "
              "(a linked stage, not retrained) are the run's stage time; eval s = the row's eval stage."]
    write_text("\n".join(lines) + "\n", rd.root / "ablations" / f"{what}.md")
    write_json({"metrics": metrics, "variants": rows, "reference": ref, "seconds": seconds, "built_on": built_on(rd, sources)},
               rd.root / "ablations" / f"{what}.json")
    slates = _slate_metrics(baselines_run)
    if slates is not None:  # looked up by row name: a row that is the run's own model gets the run's figures
        slates = {**slates, **{name: slates[model] for name, model in own.items() if model in slates}}
    console.print(summary_table(metrics, ks, slates))
    _print_table_path(cfg, rd.root / "ablations" / f"{what}.md", console)
    return metrics
