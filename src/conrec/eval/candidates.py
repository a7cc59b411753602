"""Exposure-controlled evaluation: which of the items shown to a user that day will they dislike?

Why: top-K generation metrics reward predicting popular items (on small catalogues popularity wins
them), but a platform filtering a slate before exposure asks a different question: among the items
this user is about to be shown, which will they dislike? CoNRec's *Candidate Acc.* measures that:
the true negative among 20 items shown the same day. Every model ranks exactly the same candidates.

Slates (:func:`build_slates`), one per evaluation point (a sample = a user's next dislike at ``ts``):

* the day is the UTC calendar day of ``ts``; the day's exposures come from ``data/exposures.parquet``
  (:mod:`conrec.data.exposures`: every shown item, with or without feedback);
* items in the sample's history are left out: their outcome is already known to the models (a
  positive in the prompt would give the answer away); where the samples carry the eval stage's seen set
  (:data:`~conrec.eval.seen.SEEN_COLUMN`), every item the user rated before ``ts`` is left out, not only the
  history window (with ``data.split.max_history`` shorter than the day's earlier events, a dislike rated
  before t outside the window was a target, and an earlier non-dislike a competitor);
* ``candidates`` = the true next negative + up to ``n - 1`` items exposed that day *without* a dislike
  (a seeded draw per sample when there are more; sorted ids first, so the draw is reproducible): the
  competitors every target of the point is ranked against;
* ``day_dislikes`` / ``day_others``: every such exposure of the day, disliked or not: the AUC pairs;
* points with no non-disliked exposure that day have no slate (nothing to rank against) and are
  counted, not scored.

Metrics (pure functions): Candidate Acc@1 and reciprocal rank (MRR), each averaged per point over
every day dislike not in the history (the next dislike and those after it that day) as the target, each
against the same non-disliked competitors (:func:`target_averages`: the next dislike alone is always the
earliest item of its slate, which rewarded predicting the order of the rating session); AUC (a
random day dislike outscores a random day non-dislike). Ties count as a random order: a target tied
with ``t`` others at the top gets Acc@1 ``1 / (t + 1)`` and the mean reciprocal rank over the tied
positions; a tied AUC pair counts 1/2. So a model with no signal scores chance, whatever the order of
the candidates. 95% CIs: seeded percentile bootstrap over evaluation points, or over users when one holds
several (:func:`bootstrap_ci`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import polars as pl

from conrec.console_text import shown
from conrec.data.samples import DAY
from conrec.data.schema import DISLIKE
from conrec.errors import DataValidationError, require_columns
from conrec.eval.bootstrap import mean_ci, resample, resampled_unit
from conrec.eval.seen import excluded_items

if TYPE_CHECKING:
    from rich.console import Console

    from conrec.eval.baselines.base import Recommender
    from conrec.eval.config import EvalConfig
    from conrec.runs import RunDir

SLATE_METRICS = ("CandAcc@1", "MRR", "AUC")

# A scorer maps (samples with hist_items/hist_feedback, one list of item ids per sample) to one score
# array per sample, aligned with the ids. Baselines and the LM are both wrapped into one.
Scorer = Callable[[pl.DataFrame, list[list[str]]], list[np.ndarray]]


# --------------------------------------------------------------------------------------------
# metrics: pure functions
# --------------------------------------------------------------------------------------------


def _above_and_tied(scores: Sequence[float], target: int) -> tuple[int, int]:
    s = np.asarray(scores, dtype=np.float64)
    if not 0 <= target < len(s):
        raise ValueError(f"target index {target} outside a slate of {len(s)}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    t = s[target]
    return int((s > t).sum()), int((s == t).sum()) - 1


def candidate_acc_at_1(scores: Sequence[float], target: int) -> float:
    """1 if ``scores[target]`` is the unique maximum; ``1/(t+1)`` if tied with ``t`` others at the top."""
    above, tied = _above_and_tied(scores, target)
    return 0.0 if above else 1.0 / (tied + 1)


def reciprocal_rank(scores: Sequence[float], target: int) -> float:
    """``1 / rank`` of the target (1 = best); with ties, the mean of ``1/r`` over the tied ranks."""
    above, tied = _above_and_tied(scores, target)
    ranks = np.arange(above + 1, above + tied + 2, dtype=np.float64)
    return float(np.mean(1.0 / ranks))


def pairwise_auc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """P(a positive outscores a negative), ties 1/2; None when either side is empty."""
    p, n = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if p.size == 0 or n.size == 0:
        return None
    if not (np.isfinite(p).all() and np.isfinite(n).all()):
        raise ValueError("scores must be finite")
    diff = p[:, None] - n[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95, users: Sequence[object] | None = None
) -> tuple[float, float]:
    """Seeded percentile bootstrap CI of the mean of ``values``, by the same resampler as the eval stage's FHR
    intervals (:func:`conrec.eval.bootstrap.resample`): the evaluation points, or the users (``users``: each
    value's user) when one holds more than one of them."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    return mean_ci(v, resample(v.size, users, n_boot, seed), level)


def chance_levels(slate_sizes: Sequence[int]) -> dict[str, float]:
    """What a model with no signal scores in expectation: Acc@1 ``1/n``, MRR ``H_n / n``, AUC 1/2."""
    n = np.asarray(slate_sizes, dtype=np.float64)
    if n.size == 0 or (n < 1).any():
        raise ValueError("slate sizes must be >= 1")
    harmonic = np.array([np.sum(1.0 / np.arange(1, int(k) + 1)) for k in n])
    return {"CandAcc@1": float(np.mean(1.0 / n)), "MRR": float(np.mean(harmonic / n)), "AUC": 0.5}


def summarize(
    per_point: Mapping[str, Sequence[float | None]], n_boot: int, seed: int, users: Sequence[object] | None = None
) -> dict[str, float]:
    """Mean, ``<metric>_lo`` / ``<metric>_hi`` (95% bootstrap CI) and ``<metric>_n`` per metric (None = no value).
    Fewer than :data:`conrec.eval.compare.MIN_POINTS` values get no interval (one slate's was zero-width).
    ``users``: each point's user, aligned with the values: the users are resampled when one holds several points."""
    from conrec.eval.compare import MIN_POINTS

    out: dict[str, float] = {}
    for name, vals in per_point.items():
        if users is not None and len(users) != len(vals):
            raise ValueError(f"{len(users)} user ids for {len(vals)} values of {name}")
        kept = [i for i, x in enumerate(vals) if x is not None]
        v = [float(cast(float, vals[i])) for i in kept]
        if not v:
            continue
        out.update({name: float(np.mean(v)), f"{name}_n": float(len(v))})
        if len(v) >= MIN_POINTS:
            who = [users[i] for i in kept] if users is not None else None
            out[f"{name}_lo"], out[f"{name}_hi"] = bootstrap_ci(v, n_boot=n_boot, seed=seed, users=who)
    return out


def _slate_cell(m: Mapping[str, float], key: str) -> str:
    if key not in m:
        return "–"
    return f"{m[key]:.3f} [{m[key + '_lo']:.3f}, {m[key + '_hi']:.3f}]" if key + "_lo" in m else f"{m[key]:.3f} (no CI: one point)"


# --------------------------------------------------------------------------------------------
# slates
# --------------------------------------------------------------------------------------------


SLATE_SCHEMA: dict[str, Any] = {
    "sample_id": pl.Int64,
    "candidates": pl.List(pl.String),
    "day_dislikes": pl.List(pl.String),
    "day_others": pl.List(pl.String),
}


CANDIDATE_RULE = "an item the user was shown on the point's day, not disliked that day, not in the history"


def build_slates(samples: pl.DataFrame, exposures: pl.DataFrame, n_candidates: int = 20, seed: int = 0) -> pl.DataFrame:
    """One slate per sample with at least one non-disliked same-day exposure (see module docstring).

    ``samples`` needs ``sample_id, user_id, ts, next_neg, hist_items`` (and :data:`~conrec.eval.seen.SEEN_COLUMN`, when present, is
    left out as the history is: every item rated before ``ts``); ``exposures`` needs
    ``user_id, item_id, ts, outcome``. ``candidates[0]`` is the true negative. The draw of the
    other candidates depends only on (``seed``, sample_id), not on which other samples are present.
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2 (the true negative and at least one other), got {n_candidates}")
    for name, df, cols in (
        ("samples", samples, ("sample_id", "user_id", "ts", "next_neg", "hist_items")),
        ("exposures", exposures, ("user_id", "item_id", "ts", "outcome")),
    ):
        require_columns(df, cols, name)
    known = excluded_items(samples)  # the whole history before t where attached, not only the window the models read
    points = samples.select(
        "sample_id", pl.col("user_id").cast(pl.String), "next_neg", known.alias("hist_items"), (pl.col("ts") // DAY).alias("day")
    )
    day_exp = (
        exposures.select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String), (pl.col("ts") // DAY).alias("day"), "outcome")
        .group_by("user_id", "day", "item_id")
        .agg(disliked=(pl.col("outcome") == DISLIKE).any())
    )
    joined = (
        points.join(day_exp, on=["user_id", "day"], how="inner")
        .filter(~pl.col("hist_items").list.contains(pl.col("item_id")) & (pl.col("item_id") != pl.col("next_neg")))
        .sort("sample_id", "item_id")
        .group_by("sample_id", maintain_order=True)
        .agg(
            day_dislikes=pl.col("item_id").filter(pl.col("disliked")),
            day_others=pl.col("item_id").filter(~pl.col("disliked")),
        )
    )
    rows = points.select("sample_id", "next_neg").join(joined, on="sample_id", how="inner").sort("sample_id")
    out: dict[str, list[Any]] = {k: [] for k in SLATE_SCHEMA}
    for sid, target, dis, others in rows.iter_rows():
        if not others:
            continue
        rng = np.random.default_rng([seed, sid])
        picked = others if len(others) <= n_candidates - 1 else [others[j] for j in sorted(rng.choice(len(others), n_candidates - 1, replace=False))]
        out["sample_id"].append(sid)
        out["candidates"].append([target, *picked])
        out["day_dislikes"].append([target, *dis])
        out["day_others"].append(list(others))
    return pl.DataFrame(out, schema=SLATE_SCHEMA)


# --------------------------------------------------------------------------------------------
# scoring every model on the same slates
# --------------------------------------------------------------------------------------------


def evaluate_scorer(scorer: Scorer, samples: pl.DataFrame, slates: pl.DataFrame) -> dict[str, list[float | None]]:
    """Per evaluation point: CandAcc@1, MRR (slate), AUC (all the day's exposures); one score call.

    The scorer gets each sample's whole set (slate + day exposures, distinct) once, so every item
    has one score per point and the slate and the AUC pairs are judged by the same numbers.
    """
    chosen = samples.join(slates.select("sample_id"), on="sample_id", how="semi").sort("sample_id")
    slates = slates.sort("sample_id")
    if chosen.height != slates.height:
        raise DataValidationError(f"{slates.height} slates but {chosen.height} matching samples")
    sets = [
        list(dict.fromkeys([*c, *d, *o]))
        for c, d, o in zip(slates["candidates"].to_list(), slates["day_dislikes"].to_list(), slates["day_others"].to_list())
    ]
    scored = scorer(chosen, sets)
    if len(scored) != len(sets):
        raise DataValidationError(f"scorer returned {len(scored)} score lists for {len(sets)} slates")
    out: dict[str, list[float | None]] = {m: [] for m in SLATE_METRICS}
    for items, scores, cands, dis, others in zip(
        sets, scored, slates["candidates"].to_list(), slates["day_dislikes"].to_list(), slates["day_others"].to_list()
    ):
        s = dict(zip(items, np.asarray(scores, dtype=np.float64).tolist()))
        acc, rr = target_averages([s[d] for d in dis], [s[c] for c in cands[1:]])
        out["CandAcc@1"].append(acc)
        out["MRR"].append(rr)
        out["AUC"].append(pairwise_auc([s[i] for i in dis], [s[i] for i in others]))
    return out


def target_averages(target_scores: Sequence[float], competitor_scores: Sequence[float]) -> tuple[float, float]:
    """(Candidate Acc@1, reciprocal rank) of one point: each of its day's dislikes (``target_scores``) in turn
    ranked against the same non-disliked competitors, averaged over the dislikes.

    Why every dislike and not only the next one: the next dislike is the earliest item of its slate (the day's
    items before it are in the history), so a model of the rating order won by picking whatever comes next: on a
    demo run's slates the LM's Acc@1 was 0.356 with the next dislike as the target and 0.093 (chance 0.075) with
    another dislike of the same day, below popularity's 0.141 (metrics audit of 7 December 2026)."""
    if not target_scores:
        raise ValueError("a slate needs at least one target")
    rows = [[t, *competitor_scores] for t in target_scores]
    return (float(np.mean([candidate_acc_at_1(r, 0) for r in rows])), float(np.mean([reciprocal_rank(r, 0) for r in rows])))


def baseline_scorer(model: Recommender, item_ids: Sequence[str]) -> Scorer:
    """A fitted baseline as a scorer: its ``item_scores`` read out at each sample's items."""
    from conrec.eval.baselines.base import candidate_scores

    def score(samples: pl.DataFrame, sets: list[list[str]]) -> list[np.ndarray]:
        return candidate_scores(model.item_scores(samples), item_ids, sets)

    return score


def lm_scorer(predictor: Any, max_items_per_call: int = 512) -> Scorer:
    """A :class:`conrec.llm.inference.predict.Predictor` as a scorer: its :meth:`score` per item (``log p(SID | prompt) + w * log prior(item)``).

    Calls are grouped so one call holds at most ``max_items_per_call`` items (the prompt cache is
    repeated per item, so memory grows with the items of a call).
    """

    def score(samples: pl.DataFrame, sets: list[list[str]]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        start = 0
        while start < len(sets):
            end, total = start, 0
            while end < len(sets) and (end == start or total + len(sets[end]) <= max_items_per_call):
                total += len(sets[end])
                end += 1
            # score_samples: a point with an empty history (data.split.min_history: 0) is scored, as it is decoded
            out.extend(np.asarray(s) for s in predictor.score_samples(samples.slice(start, end - start), sets[start:end]))
            start = end
        return out

    return score


@dataclass
class SlateReport:
    metrics: dict[str, dict[str, float]]
    n_points: int
    n_without_slate: int
    mean_slate: float
    seconds: dict[str, float]
    chance: dict[str, float] | None = None
    unit: str = "points"  # what the CIs resampled (conrec.eval.bootstrap.resampled_unit)

    def markdown(self, title: str = "Exposure-controlled evaluation (same candidates for every model)") -> str:
        lines = [
            f"## {title}",
            "",
            f"{self.n_points} evaluation point{'' if self.n_points == 1 else 's'} with a slate (the true next dislike + same-day exposures not disliked "
            f"that day, {round(self.mean_slate - 1, 1)} on average, up to eval.slates.n_candidates - 1; "
            f"{self.n_without_slate} points had no candidate: {CANDIDATE_RULE}). Candidate Acc@1: a day dislike "
            "ranked first against those competitors; MRR: its reciprocal rank; both averaged per point over every "
            "dislike of the day not in the history (the next one and those after it), so that predicting which item "
            "is rated next earns nothing; AUC: day dislikes vs day non-dislikes. "
            f"Ties count as random order. [95% bootstrap CI, resampling the {self.unit}].",
            "",
            "| model | Candidate Acc@1 | MRR | AUC |",
            "|---|---:|---:|---:|",
        ]
        for model, m in self.metrics.items():
            cells = [_slate_cell(m, k) for k in SLATE_METRICS]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        if self.chance:
            lines.append("| (chance: random order) | " + " | ".join(f"{self.chance[k]:.3f}" for k in SLATE_METRICS) + " |")
        return "\n".join(lines)


def few_slates_note(n_points: int) -> str | None:
    """A note when fewer than :data:`conrec.eval.compare.SMALL_N` points have a slate, else None. Why: the terminal
    summary's Cand. Acc@1 column has no n, and with one slate it printed 1.000 against 0.000 as if measured."""
    from conrec.eval.compare import SMALL_N

    if n_points >= SMALL_N:
        return None
    what = "one slate's outcome" if n_points == 1 else f"{n_points} slates' outcomes"
    return (f"Exposure-controlled evaluation on {n_points} point{'' if n_points == 1 else 's'} with a slate (fewer than "
            f"{SMALL_N}): Candidate Acc@1, MRR and AUC (the summary's Cand. Acc@1) are {what}, not an estimate.")


def run_slate_eval(
    ecfg: EvalConfig,
    rd: RunDir,
    samples: pl.DataFrame,
    fitted: Mapping[str, Recommender],
    lm_names: Sequence[str],
    load_lm: Callable[[str], Any],
    item_ids: Sequence[str],
    console: Console | None = None,
    notes: list[str] | None = None,
) -> SlateReport | None:
    """Every fitted baseline and LM on the same slates; writes ``eval/slate_metrics.json``.

    ``load_lm(name)``: the :class:`conrec.llm.inference.predict.Predictor` of LM ``name`` (loaded only once
    the slates are built).

    Returns None with a note when the run has no exposures table (data stage from before exposures were written:
    rerun ``conrec data``) or no point has a candidate: appended to ``notes`` (the report's, which the eval stage also
    prints under its results table), or printed on ``console`` when there is no such list; not both, or a `conrec
    eval` printed it twice.
    """
    from conrec.io import read_parquet, write_json, write_parquet

    ccfg = ecfg.slates

    def skipped(why: str) -> None:
        if notes is not None:
            notes.append(why)
        elif console is not None:
            console.print(f"[yellow]note:[/] {shown(why)}")

    if not rd.exposures.exists():
        skipped(f"no {rd.exposures}: exposure-controlled evaluation skipped (rerun `conrec data`)")
        return None
    exposures = read_parquet(rd.exposures, what="exposures (data stage output)")
    slates = build_slates(samples, exposures, ccfg.n_candidates, ecfg.seed)
    if slates.height == 0:  # e.g. one event per user and day: a note, not a failed eval (the other metrics stand)
        skipped(
            f"exposure-controlled evaluation skipped: no evaluation point has a candidate ({CANDIDATE_RULE}); "
            "set eval.slates.enabled: false to silence this"
        )
        return None
    write_parquet(slates, rd.eval / "slates.parquet")
    scorers: dict[str, Scorer] = {name: baseline_scorer(m, item_ids) for name, m in fitted.items()}
    for name in lm_names:
        scorers[name] = lm_scorer(load_lm(name))
    metrics: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    # each slate's user, in evaluate_scorer's order (sample_id): one user's slates are resampled together
    users = (slates.select("sample_id").sort("sample_id")
             .join(samples.select("sample_id", pl.col("user_id").cast(pl.String)), on="sample_id", how="left", maintain_order="left")
             ["user_id"].to_list())
    for name, scorer in scorers.items():
        t0 = time.perf_counter()
        per_point = evaluate_scorer(scorer, samples, slates)
        seconds[name] = round(time.perf_counter() - t0, 2)
        metrics[name] = summarize(per_point, ccfg.n_bootstrap, ecfg.seed, users)
    report = SlateReport(
        metrics=metrics,
        n_points=slates.height,
        n_without_slate=samples.height - slates.height,
        mean_slate=float(cast(float, slates["candidates"].list.len().mean()) or 0.0),
        seconds=seconds,
        chance=chance_levels(slates["candidates"].list.len().to_list()),
        unit=resampled_unit(users),
    )
    if notes is not None and (note := few_slates_note(report.n_points)) is not None:
        notes.append(note)
    write_json(
        {"metrics": metrics, "chance": report.chance, "n_points": report.n_points, "n_without_slate": report.n_without_slate,
         "mean_slate": report.mean_slate, "seconds": seconds, "n_candidates": ccfg.n_candidates, "bootstrap_unit": report.unit},
        rd.eval / "slate_metrics.json",
    )
    return report
