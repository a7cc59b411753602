"""The eval stage: baselines and LM checkpoints on the same evaluation samples, one report.

Leakage rule: every baseline is fitted only on events strictly before the evaluated split's
cut-off (``data/stats.json``; under ``data.split.protocol: per_user``, each user's events before
that user's own start of the split, :func:`conrec.data.splits.per_user_fit_events`), so nothing it
learns comes from the period it is judged on. With ``eval.tune`` each baseline's settings are first
chosen on the valid split the same way (:mod:`conrec.eval.tuning`), then refitted for the evaluated
split. Every model ranks the same samples (capped deterministically by ``eval.seed`` for quick
runs), and a sample a model gives no prediction for counts as all misses. "Training dislikes" for
LIF are the dislikes in the evaluated split's fit events.

Outputs (``run_dir/eval``): ``predictions/<model>.parquet`` (sample_id, items, n_invalid[, scores]),
``metrics.json`` (``model -> metric -> value``; per-horizon values as ``FHR@K|N=<h>d`` keys; CIs
as ``FHR@K_ci: [lo, hi]``, paired differences vs the best baseline as ``FHR@K_diff``,
``FHR@K_diff_ci``, ``FHR@K_vs`` (see :mod:`conrec.eval.compare`); with ``eval.context_swap``,
``swap_FHR@K`` and ``swap_overlap@K`` at the largest K), ``tuning.json`` when tuned,
``report.md`` and the PNG plots (see :mod:`conrec.eval.report`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl
from rich.console import Console

from conrec.console_text import shown
from conrec.data.analyze import stop_causes, window_stops
from conrec.data.fit_events import fit_events_for, split_cutoff
from conrec.data.popularity import dislike_counts  # the training dislikes that define LIF's long tail
from conrec.data.schema import DISLIKE
from conrec.data.splits import share_overlap, share_overlap_warning
from conrec.data.windows import beyond_max_note, cut_short_note, cut_short_shares, measurable_horizons
from conrec.errors import ConrecError, StageInputError, spoken_list
from conrec.eval.baselines import REGISTRY, facet_readers, make_baseline, sid_readers
from conrec.eval.baselines.base import no_point_signal, no_signal_reason, recommend_noting_flat, watch_epochs
from conrec.eval.baselines.category import facet_pairs, unique_column_notes
from conrec.eval.bootstrap import resampled_unit
from conrec.eval.compare import MIN_POINTS, SMALL_N, add_intervals
from conrec.eval.context_swap import mean_overlap, swap_histories
from conrec.eval.cost import ITEM_ITEM_MAX_ITEMS, Workload, announcement, skip_reason
from conrec.eval.metrics import HORIZON_METRICS, catalog_coverage, fhr_at_k, horizon_key, invalid_rate, nan_mean, point_inputs, point_values
from conrec.eval.preflight import preflight, refuse_scoring_trained_labels
from conrec.eval.report import tuning_section, write_report
from conrec.eval.seen import exclusion_indices, with_seen_items_each
from conrec.eval.summary import summary_table
from conrec.eval.taste_check import facet_items, future_on_facet_share, on_facet_share, taste_section
from conrec.eval.tuning import TuneResult, tune_baseline
from conrec.io import read_json, read_parquet, write_json, write_parquet
from conrec.progress import stage_progress
from conrec.runs import RunDir
from conrec.runtime import available_memory, busy_cores
from conrec.stages import MODEL_STAGES

if TYPE_CHECKING:
    from conrec.data.config import SplitConfig
    from conrec.stages import EvalSections

_STATS_FOR_REPORT = (
    "source", "users", "items", "events", "dislikes", "dislike_share", "users_with_dislikes",
    "median_negatives_per_user", "first_event", "last_event", "valid_cutoff", "test_cutoff", "samples",
    "invalid_rows",  # what data.on_invalid repaired or dropped (conrec.data.repair)
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


def predictions_frame(sample_ids: list[int], rankings: list[list[str]], n_invalid: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"sample_id": sample_ids, "items": rankings, "n_invalid": n_invalid or [0] * len(sample_ids)},
        schema={"sample_id": pl.Int64, "items": pl.List(pl.String), "n_invalid": pl.Int64},
    )


def all_metrics_with_points(
    preds: pl.DataFrame,
    samples: pl.DataFrame,
    ks: list[int],
    n_items: int,
    horizons: list[float],
    train_dislike_counts: dict[str, int] | None = None,
    catalogue: list[str] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, per-point values): every registered metric at the data stage's window, Coverage,
    invalid rate, and FHR/FPrec/FRecall at every extra horizon (flat keys)."""
    inputs, n_invalid = point_inputs(preds, samples, None, train_dislike_counts, catalogue)
    points = point_values(inputs, ks)
    # a metric with no point in its population (LUF/LIF on some data) is left out rather than NaN
    out = {key: m for key, v in points.items() if not math.isnan(m := nan_mean(v))}
    for k in ks:
        out[f"Coverage@{k}"] = catalog_coverage(inputs.rankings, n_items, k)
    n_returned = sum(len(r) for r in inputs.rankings)
    out["invalid_rate"] = invalid_rate(n_invalid, n_invalid + n_returned)
    out["n_samples"] = float(len(inputs.rankings))
    for tail in ("LUF", "LIF"):  # their populations (the same at every K): a mean over 3 points is no result
        key = f"{tail}@{ks[0]}"
        if key in points:
            out[f"n_samples_{tail}"] = float((~np.isnan(points[key])).sum())
    for h in horizons:
        at_h, _ = point_inputs(preds, samples, h)
        for key, v in point_values(at_h, ks, HORIZON_METRICS).items():
            metric, k_text = key.split("@")
            if not math.isnan(m := nan_mean(v)):
                out[horizon_key(metric, int(k_text), h)] = m
    return out, points


def all_metrics(
    preds: pl.DataFrame, samples: pl.DataFrame, ks: list[int], n_items: int, horizons: list[float],
    train_dislike_counts: dict[str, int] | None = None,
) -> dict[str, float]:
    """Metrics at the data stage's window, plus FHR/FPrec/FRecall at every extra horizon (flat keys)."""
    return all_metrics_with_points(preds, samples, ks, n_items, horizons, train_dislike_counts)[0]


def swap_metrics(own: list[list[str]], swapped: list[list[str]], samples: pl.DataFrame, k: int) -> dict[str, float]:
    """``swap_FHR@k`` (swapped rankings against each point's own future) and ``swap_overlap@k``."""
    futures = [set(f or ()) for f in samples["future_negs"].to_list()]
    return {
        f"swap_FHR@{k}": float(np.mean([fhr_at_k(r, f, k) for r, f in zip(swapped, futures)])),
        f"swap_overlap@{k}": mean_overlap(own, swapped, k),
    }


def _rankings(preds: pl.DataFrame, samples: pl.DataFrame) -> list[list[str]]:
    joined = samples.select("sample_id").join(preds.select("sample_id", "items"), on="sample_id", how="left", maintain_order="left")
    return [list(x) if x is not None else [] for x in joined["items"].to_list()]


# (samples, k, console) -> predictions with sample_id, items, scores, n_invalid: one loaded LM's decoding
LmDecode = Callable[[pl.DataFrame, int, Console], pl.DataFrame]
# (sections, run dir, model name) -> that LM's LmDecode: loading (imports, checkpoint, item prior) apart from decoding
LmLoad = Callable[["EvalSections", RunDir, str], LmDecode]


def lm_predictor(sections: EvalSections, rd: RunDir, name: str) -> Any:
    """The :class:`conrec.llm.inference.predict.Predictor` of the run's LM ``name``, queried with the declared
    ``prompt`` and ``decode`` sections (imported lazily: torch/transformers load only when an LM
    checkpoint is actually evaluated)."""
    try:
        from conrec.llm.inference.predict import Predictor, run_item_prior
    except ImportError as exc:
        raise ConrecError(f"cannot evaluate LM model {name!r}: conrec.llm.inference.predict is unavailable ({exc})") from exc
    from conrec.sid.sid_map import SidMap

    sid_map = SidMap.from_parquet(rd.sid_map)
    prior = run_item_prior(rd.root, sections.split, sid_map, sections.decode)
    return Predictor.from_dir(rd.model_dir(name), sid_map, sections.prompt, sections.decode, prior, sections.split.max_history)


def lm_decoder(sections: EvalSections, rd: RunDir, name: str) -> LmDecode:
    """The LM's top-``k`` for every sample (:meth:`Predictor.predict_samples`), its checkpoint loaded now. The default
    ``load_lm`` of :func:`run`: loading is timed apart from decoding (the first LM paid for importing torch and
    transformers, and its "decoding" time was ten times the second's)."""
    predictor = lm_predictor(sections, rd, name)

    def decode(samples: pl.DataFrame, k: int, console: Console) -> pl.DataFrame:
        return predictor.predict_samples(samples, k, console=console)  # type: ignore[no-any-return]

    return decode


def _discernment(rd: RunDir, metrics: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Discernment accuracy (SFT, each GRPO stage) and forgetting into the LM rows of ``metrics``:
    ``discern_acc``, ``discern_forgetting`` and ``discern_acc|stage=<name>``. GRPO's figures only when
    GRPO is evaluated here (current, so trained from this SFT model): a stale ``grpo/stats.json`` left by
    a GRPO trained from an earlier SFT model was reported as this one's forgetting."""
    from conrec.llm.training.discernment import summary

    def stats(path: Path) -> dict[str, Any] | None:
        return read_json(path, what="stage stats") if path.exists() else None

    # an evaluated GRPO is current, so the SFT model it was trained from is too: its figures are the reference
    s = summary(stats(rd.sft / "stats.json") if {"sft", "grpo"} & set(metrics) else None,
                stats(rd.grpo / "stats.json") if "grpo" in metrics else None)
    if s is None:
        return None
    if "sft" in metrics and s["sft"] is not None:
        metrics["sft"]["discern_acc"] = s["sft"]
    if "grpo" in metrics and s["grpo"] is not None:
        metrics["grpo"]["discern_acc"] = s["grpo"]
        if s["forgetting"] is not None:
            metrics["grpo"]["discern_forgetting"] = s["forgetting"]
        for st in s["stages"]:
            metrics["grpo"][f"discern_acc|stage={st['stage']}"] = st["accuracy"]
    return s


def _with_text_vectors(rd: RunDir, items: pl.DataFrame, readers: list[str]) -> pl.DataFrame:
    """``items`` with the sid stage's text vectors attached, for the baselines ``readers`` that read them (the content
    baseline: :func:`conrec.eval.baselines.sid_readers`).

    Runs tokenised before ``sid/text_vectors.npy`` existed still work when their ``embeddings.npy``
    is the text alone (no ``sid.collab``), so nobody re-tokenises (and retrains) for a baseline.
    """
    from conrec.eval.baselines.content import with_text_vectors

    path = rd.text_vectors
    if not path.exists():
        stats_path = rd.sid / "stats.json"
        encoder = read_json(stats_path, what="sid stats").get("encoder", {}) if stats_path.exists() else {}
        if not rd.embeddings.exists() or not stats_path.exists() or "collab_dims" in encoder:
            raise StageInputError(missing_text_vectors(readers, path))
        path = rd.embeddings
    return with_text_vectors(items, np.load(path))


def missing_text_vectors(readers: list[str], path: Path) -> str:
    """The refusal of the baselines ``readers`` (:func:`conrec.eval.baselines.sid_readers`) without the sid stage's
    text vectors at ``path``, worded in their number: one today, as only ``content`` reads the sid stage (a plural
    sentence of its own, for several, was written by hand and reached by no configuration)."""
    several = len(readers) > 1
    return (f"the {spoken_list(readers)} baseline{'s' if several else ''} need{'' if several else 's'} {path}: rerun `conrec sid` "
            f"(or drop {spoken_list([f'`{b}`' for b in readers])} from eval.baselines)")


def _taste_check(rd: RunDir, items: pl.DataFrame, samples: pl.DataFrame, rankings: dict[str, list[list[str]]], k: int) -> str | None:
    """The report's taste check (:mod:`conrec.eval.taste_check`) of this evaluation's rankings (one
    per sample, in ``samples`` order) where the data stage wrote the simulator's ground truth; None
    elsewhere."""
    path = rd.data / "user_facets.parquet"
    if not path.exists():
        return None
    on_facet = facet_items(read_parquet(path, what="user facets (simulator ground truth)"), items)
    users = samples["user_id"].cast(pl.String).to_list()
    shares = {name: on_facet_share(ranked, users, on_facet, k) for name, ranked in rankings.items()}
    return taste_section(shares, k, future_on_facet_share(samples, on_facet)) if shares else None


def largest_remainder(samples: pl.DataFrame, catalogue: list[str]) -> int:
    """The most items any point of ``samples`` can be recommended: the catalogue less the items excluded there (its
    history items, :func:`conrec.eval.seen.exclusion_indices`)."""
    index = {it: j for j, it in enumerate(dict.fromkeys(catalogue))}
    return max((len(index) - len(np.unique(ex)) for ex in exclusion_indices(samples, index)), default=len(index))


def whole_remainder_notes(ks: list[int], samples: pl.DataFrame, tune_k: int | None, valid: pl.DataFrame | None,
                          catalogue: list[str]) -> list[str]:
    """Notes for the K at or above every point's catalogue less its history: there every model returns that whole
    remainder, so set metrics cannot tell rows apart, and tuning on FHR@tune_k ties at every grid point.

    Why: on a 10-item catalogue with the default K = 5, 10, 20 every baseline's FHR@20 was the same, every grid point
    of every baseline tied, and popularity was "the best baseline" for being listed first, with no word on it."""
    n = len(catalogue)
    notes = []
    reach = largest_remainder(samples, catalogue)
    if at := [k for k in ks if k >= reach]:
        which = "K = " + ", ".join(map(str, at))
        notes.append(
            f"{which} (eval.ks) is at or above every evaluated point's catalogue less its history (at most {reach} of {n} "
            f"items): every model returns that whole remainder, so FHR, HR, FPrec, FRecall, LUF, LIF and Coverage at "
            f"{which} cannot differ between rows (NDCG still reads the order)."
        )
    if tune_k is not None and valid is not None and tune_k >= (valid_reach := largest_remainder(valid, catalogue)):
        notes.append(
            f"eval.tune_k = {tune_k} is at or above every valid point's catalogue less its history (at most {valid_reach} "
            f"of {n} items): every grid point returns that whole remainder, so valid FHR@{tune_k} ties everywhere and "
            f"each baseline kept its first grid point (tuning had no signal; set eval.tune_k below {valid_reach})."
        )
    return notes


def data_warning_notes(stats: dict[str, Any] | None, samples: pl.DataFrame | None = None, split: SplitConfig | None = None) -> list[str]:
    """The data stage's warnings kept in ``data/stats.json`` (its ``warnings``; :func:`conrec.data.stage.split_warnings`),
    as report notes. Why: a split whose valid and test points come from different users was printed once by
    ``conrec data`` and then nowhere near the figures it qualifies. A data stage built before 2026-12-07 wrote no such
    key and stays current (its outputs did not change), so for it the one warning the key holds today is worked out
    here from its ``samples`` (all splits) under its ``split`` settings, as the data stage does
    (:func:`_split_warnings_of_older_data`); without them, only the kept warnings."""
    warnings = (stats or {}).get("warnings")
    if not isinstance(warnings, list):
        warnings = [] if samples is None or split is None else _split_warnings_of_older_data(stats, samples, split)
    return [f"Data stage warning: {w}." for w in warnings if isinstance(w, str)]


def _split_warnings_of_older_data(stats: dict[str, Any] | None, samples: pl.DataFrame, split: SplitConfig) -> list[str]:
    """:func:`conrec.data.stage.split_warnings` over the samples already in memory: the per-user split's share-overlap
    warning (:func:`conrec.data.splits.share_overlap_warning`), or none (another protocol, or no stats to read the
    median user's dislikes from)."""
    median = (stats or {}).get("median_negatives_per_user_with_any")
    if split.protocol != "per_user" or not isinstance(median, (int, float)):
        return []
    warning = share_overlap_warning(share_overlap(samples.lazy()), split, float(median))
    return [] if warning is None else [warning]


def no_signal_notes(reasons: dict[str, str]) -> list[str]:
    """One report note per reason (baseline -> why it had no signal, :func:`no_signal_reason`), naming every
    baseline it holds for: such a row is dislike popularity under another name, not a model of its own."""
    grouped: dict[str, list[str]] = {}
    for name, why in reasons.items():
        grouped.setdefault(why, []).append(name)
    return [
        f"{', '.join(names)}: {why}; {'its row is' if len(names) == 1 else 'these rows are'} dislike popularity "
        f"(plain counts over the fit events, the order every baseline fills up with), not a model of "
        f"{'its' if len(names) == 1 else 'their'} own."
        for why, names in grouped.items()
    ]


POPULARITY_POINTS_SHARE = 0.5
"""A baseline that ranks at least this share of the evaluated points by popularity alone gets a note
(:func:`popularity_points_notes`): its row is then mostly popularity's, not a model's of its own."""


def popularity_points_notes(flat: dict[str, tuple[np.ndarray, str]], samples: pl.DataFrame, split: str, slates: bool) -> list[str]:
    """Notes on the baselines that rank :data:`POPULARITY_POINTS_SHARE` or more of the evaluated ``samples`` by dislike
    popularity alone (``flat``: baseline -> (a bool per point, what it lacked there),
    :func:`conrec.eval.baselines.base.popularity_points`, read off the top-K pass), one per (what, how many), naming
    how many of those points hold no dislike in their history (no baseline reading dislikes has anything there);
    ``slates``: the exposure-controlled evaluation ran.

    Why: the whole-fit note (:func:`no_signal_notes`) fires only when a baseline learnt nothing at all. On a log where
    few histories hold a disliked item with a co-disliked neighbour, swing's top-20 was dislike popularity at 196 of 205
    test points, its FHR and Coverage equal to popularity's, its slate AUC 0.500, and nothing said so but a tied grid."""
    n_points = samples.height
    if not n_points:
        return []
    no_dislike = ~samples["hist_feedback"].list.eval(pl.element() < 0).list.any().fill_null(False).to_numpy()
    grouped: dict[tuple[str, int, int], list[str]] = {}
    for name, (mask, what) in flat.items():
        if mask.sum() >= POPULARITY_POINTS_SHARE * n_points:
            grouped.setdefault((what, int(mask.sum()), int((mask & no_dislike).sum())), []).append(name)
    notes = []
    for (what, n, blank), names in grouped.items():
        one = len(names) == 1
        ties = f" and {'its' if one else 'their'} slate scores all tie" if slates else ""
        notes.append(
            f"{', '.join(names)}: {what} at {n:,} of the {n_points:,} {split} points ({n / n_points:.0%}"
            f"{f'; at {blank:,} of them the history holds no dislike' if blank else ''}): {'its' if one else 'their'} item scores are one value over every item "
            f"{'it' if one else 'they'} may recommend there, so there {'it ranks' if one else 'they rank'} by dislike "
            f"popularity (plain counts over the fit events, the order every baseline fills up with){ties}; "
            f"{'its row is' if one else 'these rows are'} {_elsewhere(n_points - n, one)}."
        )
    return notes


def _elsewhere(rest: int, one: bool) -> str:
    """What a row (``one``) or rows that rank all but ``rest`` points by popularity are (:func:`popularity_points_notes`)."""
    own = "a model of its own" if one else "models of their own"
    if not rest:
        return f"dislike popularity at every point, not {own}"
    return f"{own} at the other {rest:,} point{'s' if rest > 1 else ''} only"


def report_cut_window_note(samples: pl.DataFrame, samples_all: pl.DataFrame, split: str, protocol: str,
                    stats: dict[str, Any] | None, log_end: int, windows: list[float]) -> str | None:
    """The report's note on the evaluated ``samples``' windows cut short at ``windows`` (days), each at its own
    stop as ``conrec analyze`` counts them (:func:`conrec.data.analyze.window_stops`): a test point's at the end
    of the log, a valid point's at the test cut-off (per user: its user's first test dislike, read from
    ``samples_all``'s test points). Why: measured against the end of the log only, the valid split's windows
    looked whole (2.5% cut at 7 days, where the user's test start cut 88.7%)."""
    if split != "valid":
        return cut_short_note(cut_short_shares(samples["ts"].to_numpy(), log_end, windows), log_end)
    test = samples_all.filter(pl.col("split") == "test")
    try:
        test_cutoff = None if protocol == "per_user" else split_cutoff(stats, "test", test)[0]
        cause = stop_causes(log_end, test_cutoff)["valid"]
    except StageInputError:  # no test cut-off known and no test point: nothing but the end of the log stops a window
        test_cutoff, cause = log_end, None  # the end-of-log note, not "the test cut-off (<last event + 1 s>)"
    columns = ["split", "user_id", "ts"]
    ts, stop = window_stops(pl.concat([samples.select(columns), test.select(columns)]), log_end, test_cutoff)["valid"]
    return cut_short_note(cut_short_shares(ts, stop, windows), log_end, stop=cause)


def timings_section(timings: dict[str, float], load_timings: dict[str, float]) -> str:
    """The report's Timings: a baseline's tuning, fit and top-K; an LM's decoding, then its loading in parentheses.

    Why apart: the LM figure was headed "decoding only" but held the imports of torch and transformers, the checkpoint
    and the item prior too (SFT 5.48 s against GRPO's 0.51 s for checkpoints of one size: only the first paid the
    imports)."""
    rows = [f"- {m}: {t:.2f}" + (f" (loading: {load_timings[m]:.2f})" if m in load_timings else "") for m, t in timings.items()]
    return ("## Timings (s: a baseline's tuning, fit and top-K; an LM's decoding only, with the time to load it "
            "(imports, checkpoint, item prior) in parentheses; its training is in its stage's stats.json)\n\n" + "\n".join(rows))


def fit_label(step: str, fit: int, fits: int) -> str:
    """``baseline sasrec: tune on 2094 valid samples, fit 2/7``: which of a baseline's fits (its grid points, then the
    refit) is running; the step alone for a single fit. Why: the bar counts baselines, so a 12-minute SASRec tuning
    printed the same ``3/8 (38%)`` line every 30 s, and 1 of 7 fits could not be told from 6 of 7."""
    return f"{step}, fit {fit}/{fits}" if fits > 1 else step


class _BaselineBar:
    """The baseline bar's description: the step and which of a baseline's fits runs (:func:`fit_label`) and, in a
    fit that trains in epochs (SASRec), which epoch with its mean loss: ``baseline sasrec: tune on 2094 valid
    samples, fit 2/7, epoch 12/30, loss 6.214``. Why: the bar counts baselines and fits, so one SASRec fit of
    60 epochs printed the same line every 30 s for minutes (the plain lines off a terminal repeat the description)."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task, self.step = progress, task, ""

    def fit(self, step: str) -> None:
        self.step = step
        self.progress.update(self.task, description=step)

    def point(self, step: str, fits: int, fit: int, _points: int) -> None:
        """The ``on_point(i, n)`` of :func:`conrec.eval.tuning.tune_baseline`, the first two arguments bound."""
        self.fit(fit_label(step, fit, fits))

    def epoch(self, epoch: int, epochs: int, loss: float) -> None:
        """The ``on_epoch`` of a baseline that trains in epochs (:func:`conrec.eval.baselines.base.watch_epochs`)."""
        self.progress.update(self.task, description=f"{self.step}, epoch {epoch}/{epochs}, loss {loss:.3f}")


HEADLINE_OUTPUTS = ("report.md", "metrics.json", "metrics.png")
"""The evaluation's own results: removed when the stage starts too. Why: an interrupted or failed rerun left the
previous evaluation's report and metrics, timestamps and all, beside the new partial predictions, looking current
(and naming slate and horizon sections whose files were gone); a report exists only for the evaluation that wrote it."""

OPTIONAL_OUTPUTS = ("slate_metrics.json", "slates.parquet", "tuning.json", "grpo_rewards.png", "sft_learning_curve.png", "fhr_vs_horizon.png")
"""Eval outputs written only with some settings (slates on, tuning on, GRPO evaluated, ...): removed when the
stage starts, so that a run evaluated again with slates off does not show the earlier evaluation's candidate
accuracies, nor one evaluated without GRPO the rewards of an earlier GRPO."""


def run(sections: EvalSections, run_dir: Path, console: Console, load_lm: LmLoad = lm_decoder) -> dict[str, dict[str, Any]]:
    """Evaluate ``eval.baselines`` (tuned on valid when ``eval.tune``) and the trained ``eval.models``
    on split ``eval.split``.

    Takes the stage's declared sections (``eval``; ``decode`` and ``sft.prompt``: how an LM is
    queried; ``data.split``: which events baselines may be fitted on) and the run directory (the
    stage protocol of :mod:`conrec.stages`). ``load_lm`` loads an LM and returns its decoding; it is a
    parameter so that tests (and other callers) can evaluate any predictor through exactly this
    code without loading a checkpoint.
    """
    ecfg = sections.eval
    split_cfg = sections.split
    rd = RunDir(run_dir)
    preflight(sections, run_dir)  # the pipeline checked it before training; a direct call is refused alike
    for name in (*HEADLINE_OUTPUTS, *OPTIONAL_OUTPUTS):  # an earlier eval's: later tables read them whenever they exist
        (rd.eval / name).unlink(missing_ok=True)
    for name in (*MODEL_STAGES, *REGISTRY):  # the inspector lists every model with predictions: only this eval's
        (rd.predictions / f"{name}.parquet").unlink(missing_ok=True)  # (`conrec predict` writes <model>_<split>.parquet)
    events = read_parquet(rd.events, what="events (data stage output)")
    items = read_parquet(rd.items, what="items (data stage output)")
    if readers := sid_readers(ecfg.baselines):
        items = _with_text_vectors(rd, items, readers)
    samples_all = read_parquet(rd.samples, what="samples (data stage output)")
    stats_path = rd.data / "stats.json"
    stats = read_json(stats_path, what="data stats") if stats_path.exists() else None

    chosen = select_samples(samples_all, ecfg.split, ecfg.max_samples, ecfg.seed)
    tunes = bool(ecfg.tune and ecfg.baselines)  # the baselines' settings are chosen on the valid split's points
    if tunes and samples_all.filter(pl.col("split") == "valid").height == 0:  # select_samples would blame the evaluated split
        raise StageInputError(
            "eval.tune chooses each baseline's settings on the valid split, which has no samples: set eval.tune: false, "
            "or give valid points (data.split.valid_frac)"
        )
    tune_on = (chosen if ecfg.split == "valid" else select_samples(samples_all, "valid", ecfg.max_samples, ecfg.seed)) if tunes else None
    # every item the user rated before each point is excluded from every model's top-K, not only the history window:
    # one pass over the events for the evaluated points and the tuning ones
    samples, *tune_seen = with_seen_items_each([chosen] if tune_on is None else [chosen, tune_on], events)
    n_split = samples_all.filter(pl.col("split") == ecfg.split).height
    fit_events, fit_rule = fit_events_for(events, split_cfg, stats, ecfg.split, samples_all.filter(pl.col("split") == ecfg.split))
    train_counts = dislike_counts(fit_events)
    catalogue = items["item_id"].cast(pl.String).to_list()
    ks = sorted(set(ecfg.ks))
    k_max = max(ks)
    n_items = items.height
    notes = data_warning_notes(stats, samples_all, split_cfg)  # "Baselines fitted on ..." goes first once one is (none with eval.baselines: [])
    max_h = split_cfg.max_horizon_days
    horizons, dropped = measurable_horizons(ecfg.horizons, max_h)
    if dropped:
        notes.append(beyond_max_note(dropped, max_h))
    if events.height and samples.height:
        log_end = int(cast(int, events["ts"].max())) + 1
        # the headline FHR@K's window too (data.split.horizon_days), also when eval.horizons leaves it out
        windows = sorted({*horizons, split_cfg.horizon_days})
        cut_note = report_cut_window_note(samples, samples_all, ecfg.split, split_cfg.protocol, stats, log_end, windows)
        if cut_note is not None:
            notes.append(cut_note)
    sample_ids = samples["sample_id"].to_list()
    swapped = swap_histories(samples, ecfg.seed) if ecfg.context_swap else None

    tuning: dict[str, TuneResult] = {}
    valid_samples = valid_fit = None
    if tunes:
        if ecfg.split == "valid":
            notes.append("eval.tune is on but the evaluated split is valid: baselines were tuned on the split they are scored on.")
        valid_samples = tune_seen[0]
        valid_fit, _ = fit_events_for(events, split_cfg, stats, "valid", samples_all.filter(pl.col("split") == "valid"))
    notes.extend(unique_column_notes(items, ecfg.category, readers=facet_readers(ecfg)))
    notes.extend(whole_remainder_notes(ks, samples, ecfg.tune_k if valid_samples is not None else None, valid_samples, catalogue))

    metrics: dict[str, dict[str, Any]] = {}
    points: dict[str, dict[str, np.ndarray]] = {}
    timings: dict[str, float] = {}  # a baseline's tuning, fit and top-K; an LM's decoding
    load_timings: dict[str, float] = {}  # an LM's loading (imports, checkpoint, item prior), reported apart
    fitted: dict[str, Any] = {}  # the exposure-controlled evaluation scores slates with the same fits (kept only then)
    fitted_any = False
    rankings: dict[str, list[list[str]]] = {}  # each model's top-k per sample, for the taste check
    no_signal: dict[str, str] = {}  # baselines that found nothing to learn from in the fit events (a note each)
    flat_points: dict[str, tuple[np.ndarray, str]] = {}  # baseline -> (the points it ranks by popularity alone, what it lacked)
    lm_todo = [m for m in ecfg.models if rd.model_dir(m).exists()]
    refuse_scoring_trained_labels(split_cfg, ecfg.split, lm_todo)
    if lm_todo and ecfg.split == "test" and split_cfg.train_until == "valid":
        notes.append(
            "The LM was trained on events before the valid cut-off (data.split.train_until: valid) while the baselines "
            "were fitted on events before the test cut-off: the LM saw less data than they did. For a final comparison "
            "set train_until: test and retrain."
        )
    if lm_todo and not sections.decode.exclude_history:
        notes.append(
            "decode.exclude_history is off: the LM may rank items already in the history, which every baseline excludes, "
            "so its top-K is not comparable to theirs."
        )
    for m in ecfg.models:
        if m not in lm_todo:
            notes.append(f"LM model `{m}` skipped: no checkpoint at {rd.model_dir(m)} (run `conrec {m}` first).")

    n_dislikes = fit_events.filter(pl.col("feedback") == DISLIKE).height
    pairs = facet_pairs(items, ecfg.category) if "taste_exposure" in ecfg.baselines and n_items <= ITEM_ITEM_MAX_ITEMS else 0.0
    workload = Workload(n_items=n_items, n_events=fit_events.height, n_samples=samples.height, n_dislikes=n_dislikes,
                        facet_pairs=pairs)
    busy: tuple[float, int] | None = None  # other processes' load on the cores, for the announcements
    busy_known = False
    # no bar over nothing with eval.baselines: [] ("baselines on 50 test samples: 0")
    with stage_progress(console=console, label="{task.description}", remaining=False, disable=not ecfg.baselines) as progress:
        label = f"baselines on {samples.height} {ecfg.split} samples"
        task = progress.add_task(label, total=len(ecfg.baselines))
        bar = _BaselineBar(progress, task)
        for name in ecfg.baselines:
            cost = REGISTRY[name].cost(ecfg)
            # the memory free now, at this step: the previous baselines' fits are released (see `fitted` below)
            available = available_memory() if cost.memory is not None else None
            skipped = skip_reason(name, cost, workload, ecfg.max_dense_items, available)
            if skipped is not None:
                notes.append(skipped + ".")
                console.print(f"[yellow]{shown(skipped)}[/]")
                progress.update(task, description=label)  # not the previous baseline's step
                progress.advance(task)
                continue
            fits = 1 + (len(getattr(ecfg, REGISTRY[name].settings).grid_points()) if valid_samples is not None else 0)
            if announcement(name, cost, workload, fits) is not None:
                if not busy_known:  # sampled once, at the first announcement (0.3 s asleep: others' work only)
                    busy, busy_known = busy_cores(), True
                console.print(announcement(name, cost, workload, fits, busy))
            started = time.perf_counter()
            bcfg = ecfg
            if valid_samples is not None and valid_fit is not None:
                tune_label = f"baseline {name}: tune on {valid_samples.height} valid samples"
                bar.fit(tune_label)
                bcfg, tuning[name] = tune_baseline(
                    name, ecfg, valid_fit, items, valid_samples, ecfg.tune_k,
                    on_point=partial(bar.point, tune_label, fits), on_epoch=bar.epoch,
                )
            bar.fit(fit_label(f"baseline {name}: fit + top-{k_max}", fits, fits))
            model = make_baseline(name, bcfg)
            watch_epochs(model, bar.epoch)
            model.fit(fit_events, items)
            if (why := no_signal_reason(model)) is not None:
                no_signal[name] = why
            if ecfg.slates.enabled:  # else not kept: EASE's n_items^2 matrix stayed alive through every later baseline
                fitted[name] = model
            fitted_any = True
            # popularity's row is popularity; a whole-fit reason above already says so of every point. Else the points it
            # ranks by popularity alone are read off the top-K's own pass (a second one doubled its time)
            if name != "popularity" and name not in no_signal:
                recs, flat = recommend_noting_flat(model, samples, k_max)
                if flat is not None:
                    flat_points[name] = (flat, no_point_signal(model))
            else:
                recs = model.recommend(samples, k_max)
            rankings[name] = recs
            preds = predictions_frame(sample_ids, recs)
            timings[name] = round(time.perf_counter() - started, 2)
            write_parquet(preds, rd.predictions / f"{name}.parquet")
            metrics[name], points[name] = all_metrics_with_points(preds, samples, ks, n_items, horizons, train_counts, catalogue)
            if swapped is not None:
                metrics[name].update(swap_metrics(recs, model.recommend(swapped, k_max), samples, k_max))
            del model  # released before the next baseline's tuning (held only in `fitted` for the slates)
            progress.advance(task)
        progress.update(task, description=label)  # the last line counts all baselines: it names none of them
    if fitted_any:
        notes.insert(0, f"Baselines fitted on {fit_rule}.")
    notes.extend(no_signal_notes(no_signal))
    notes.extend(popularity_points_notes(flat_points, samples, ecfg.split, ecfg.slates.enabled))
    # LM decoding shows its own progress bar (one live display at a time), so it runs after ours closed.
    for name in lm_todo:
        console.print(f"LM {name}: constrained decoding of top-{k_max} for {samples.height} samples")
        started = time.perf_counter()
        decode = load_lm(sections, rd, name)
        load_timings[name] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        preds = decode(samples, k_max, console)
        timings[name] = round(time.perf_counter() - started, 2)
        write_parquet(preds, rd.predictions / f"{name}.parquet")
        rankings[name] = _rankings(preds, samples)
        metrics[name], points[name] = all_metrics_with_points(preds, samples, ks, n_items, horizons, train_counts, catalogue)
        if swapped is not None:
            console.print(f"LM {name}: context swap (histories of other users)")
            swapped_preds = decode(swapped, k_max, console)  # the same loaded checkpoint
            metrics[name].update(swap_metrics(_rankings(preds, samples), _rankings(swapped_preds, samples), samples, k_max))

    bcfg_ci = ecfg.bootstrap
    headline = [f"{m}@{k}" for k in ks for m in bcfg_ci.metrics]
    point_users = samples["user_id"].cast(pl.String).to_list()  # one user's points are resampled together (several per user)
    add_intervals(metrics, points, ecfg.baselines, headline, bcfg_ci.resamples, bcfg_ci.level, bcfg_ci.seed, point_users)
    if samples.height < MIN_POINTS:
        notes.append(f"{samples.height} evaluation point: no confidence intervals or paired differences (a bootstrap "
                     f"needs at least {MIN_POINTS} points); the figures are one user's outcome, not an estimate.")
    elif samples.height < SMALL_N:
        notes.append(f"{samples.height} evaluation points: intervals and paired differences on fewer than {SMALL_N} points "
                     "are rough (where two rows are constant over the points, every resample gives the same difference: a "
                     "zero-width interval), so no difference is marked significant (*); the figures are a few users' "
                     "outcomes, not an estimate.")
    discern = _discernment(rd, metrics)
    write_json(metrics, rd.eval / "metrics.json")
    if tuning:
        write_json({n: t.as_dict() for n, t in tuning.items()}, rd.eval / "tuning.json")
    slate_report = None
    if ecfg.slates.enabled:
        from conrec.eval.candidates import run_slate_eval

        console.print("exposure-controlled evaluation: every model ranks the same same-day candidates")
        slate_report = run_slate_eval(
            ecfg, rd, samples, fitted, lm_todo, lambda name: lm_predictor(sections, rd, name),
            items["item_id"].cast(pl.String).to_list(), console, notes,
        )
    fut = samples["future_negs"].list.len()
    reported = [k for k in _STATS_FOR_REPORT if not (split_cfg.protocol == "per_user" and k.endswith("_cutoff"))]
    dataset_stats: dict[str, Any] = {k: stats[k] for k in reported if stats and k in stats}
    dataset_stats.update(
        {
            "split protocol": split_cfg.protocol,
            "evaluated split": ecfg.split,
            "evaluated samples": samples.height if samples.height == n_split else f"{samples.height} of {n_split} (eval.max_samples)",
            "evaluated users": samples["user_id"].n_unique(),
            "events used to fit baselines": fit_events.height,
            "future window N (days)": split_cfg.horizon_days,
            "mean future dislikes per sample": float(cast(float, fut.mean()) or 0.0),
            "bootstrap": f"{bcfg_ci.resamples} resamples of the {resampled_unit(point_users)}, {100 * bcfg_ci.level:g}% percentile CI, "
                         f"seed {bcfg_ci.seed}",
        }
    )
    extra = [slate_report.markdown()] if slate_report is not None else []
    if discern is not None:
        from conrec.llm.training.discernment import markdown as discernment_markdown

        extra.append(discernment_markdown(discern, sections.prompt))
    if tuning:
        extra.append(tuning_section({n: t.as_dict() for n, t in tuning.items()}))
    taste = _taste_check(rd, items, samples, rankings, k_max)
    if taste is not None:
        extra.append(taste)
    if notes:
        extra.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
    extra.append(timings_section(timings, load_timings))
    report = write_report(rd.root, metrics, dataset_stats, extra_sections=extra)
    console.print(summary_table(metrics, ks, slate_report.metrics if slate_report is not None else None))
    for n in notes:
        console.print(f"[yellow]note:[/] {shown(n)}")
    console.print(f"report: {shown(report)}", soft_wrap=True)
    rd.mark_done("eval", {"models": list(metrics), "split": ecfg.split, "samples": samples.height})
    return metrics
