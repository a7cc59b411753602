"""The discernment alignment task (CoNRec): which of four items did this user reject?

Why: the paper aligns the LM with four-choice questions that put one item the user rejected among
three items the user bought, so the model must *discern* the negative context from the positive one
rather than echo what is frequent. Its accuracy after RL also measures forgetting: the paper keeps
0.652 with progressive GRPO against 0.540 with plain GRPO (forgetting 13.6% vs 28.5%).

A question, built from one train sample (the user's history before ``t``):

* the answer: an item the user disliked, preferring one disliked more than once ("repeatedly
  rejected") when the history has such an item; the distractors: three items the user liked
  (never disliked);
* the four options are *removed* from the history shown in the prompt, so the answer cannot be
  copied from the negative segment: the model has to judge which option resembles the remaining
  dislikes and not the likes;
* the options are listed by SID in a seeded random order; the completion is the answer's SID::

      Which of these items did this user reject?
      Disliked (oldest first):<neg>...</neg>
      Liked (oldest first):<pos>...</pos>
      Options: <a_1><b_2><c_3> <a_4><b_0><c_1> ...
      Answer:

The timeline layouts end in a dislike tag, not in ``Answer:``, so their models are asked in the segmented
layout of the same budgets (``max_pos_items`` positives included); the report says so for them.

Accuracy = share of questions where the answer's ``log p(SID | prompt)`` is the highest of the four
(:meth:`conrec.llm.inference.predict.Predictor.score_prompts`, the slate-scoring pass). Held-out users
(``sft.discernment_holdout``, drawn with the run seed) never give a discernment *training* example;
their questions are the ones scored after SFT and after every GRPO stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from rich.console import Console

from conrec.llm.config import DecodeConfig, PromptConfig, SftConfig
from conrec.progress import stage_progress

if TYPE_CHECKING:
    from conrec.sid.sid_map import SidMap
from conrec.llm.inference.prompts import ANSWER_CUE, INSTRUCTION, build_prompt

QUESTION = "Which of these items did this user reject?"
N_OPTIONS = 4


def heldout_users(user_ids: Sequence[str], share: float, seed: int) -> set[str]:
    """A seeded ``share`` of the distinct users (at least one when share > 0 and there are users)."""
    users = sorted(set(map(str, user_ids)))
    if share <= 0 or not users:
        return set()
    n = max(1, int(round(share * len(users))))
    order = np.random.default_rng(seed).permutation(len(users))[:n]
    return {users[i] for i in order}


def question(
    hist: Sequence[str], fb: Sequence[int], sid_of: Callable[[str], str], prompt_cfg: PromptConfig, rng: np.random.Generator
) -> dict[str, Any] | None:
    """One four-choice question from a history (None when it lacks a dislike or three liked items)."""
    counts: dict[str, int] = {}
    for i, f in zip(hist, fb):
        if f < 0:
            counts[i] = counts.get(i, 0) + 1
    liked = sorted({i for i, f in zip(hist, fb) if f > 0} - set(counts))
    if not counts or len(liked) < N_OPTIONS - 1:
        return None
    repeated = sorted(i for i, c in counts.items() if c > 1)
    pool = repeated or sorted(counts)
    answer = pool[int(rng.integers(len(pool)))]
    distractors = [liked[j] for j in rng.choice(len(liked), size=N_OPTIONS - 1, replace=False)]
    options = [answer, *distractors]
    options = [options[j] for j in rng.permutation(N_OPTIONS)]
    shown = set(options)
    kept = [(i, f) for i, f in zip(hist, fb) if i not in shown]
    # a question is a text layout ending in "Answer:"; the timeline layouts end in a dislike tag, so
    # their models are asked with the segmented layout of the same budgets
    layout = prompt_cfg.model_copy(update={"variant": "segmented"}) if prompt_cfg.is_timeline else prompt_cfg
    body = build_prompt([i for i, _ in kept], [f for _, f in kept], sid_of, layout)
    lines = body.split("\n")
    assert lines[0] == INSTRUCTION and lines[-1] == ANSWER_CUE
    prompt = "\n".join([QUESTION, *lines[1:-1], "Options: " + " ".join(sid_of(o) for o in options), ANSWER_CUE])
    return {"prompt": prompt, "completion": sid_of(answer), "options": options, "answer": answer}


def questions(
    samples: pl.DataFrame, sid_of: Callable[[str], str], prompt_cfg: PromptConfig, n: int, seed: int, repeat: bool = False
) -> list[dict[str, Any]]:
    """Up to ``n`` questions from ``samples``, drawn in a seeded order: one per sample, or (``repeat``,
    for training) further passes over the samples with fresh draws of answer, distractors and order."""
    rows = samples.select("sample_id", "hist_items", "hist_feedback").rows()
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    passes = (n // max(1, len(rows)) + 2) if repeat else 1
    for _ in range(passes):
        before = len(out)
        for r in rng.permutation(len(rows)):
            if len(out) >= n:
                return out
            sample_id, hist, fb = rows[int(r)]
            q = question(list(hist or []), list(fb or []), sid_of, prompt_cfg, rng)
            if q is not None:
                out.append(q | {"source": str(sample_id)})
        if len(out) == before:  # no sample can give a question
            break
    return out


def heldout_questions(samples: pl.DataFrame, sid_of: Callable[[str], str], prompt_cfg: PromptConfig, share: float, n: int, seed: int) -> list[dict[str, Any]]:
    """The evaluation questions: one per sample of the held-out users, any split (a question only uses
    the history before the sample's time, never its labels, and these users never trained on the task)."""
    users = heldout_users(samples.filter(pl.col("split") == "train")["user_id"].to_list(), share, seed)
    return questions(samples.filter(pl.col("user_id").is_in(sorted(users))), sid_of, prompt_cfg, n, seed + 1)


def accuracy(
    predictor: Any, qs: Sequence[dict[str, Any]], chunk: int | None = None, on_scored: Callable[[int], None] | None = None
) -> float | None:
    """Share of questions whose answer gets the highest ``log p(SID | prompt)`` of its options (None if none).

    ``chunk``: score the questions ``chunk`` at a time (None: all in one call), calling ``on_scored`` with the number
    of questions scored after each call (a progress bar). The predictor batches by its ``decode.batch_size``, so a
    chunk of that size scores the same batches as one call."""
    if not qs:
        return None
    step = len(qs) if chunk is None else max(1, chunk)
    scores: list[Sequence[float]] = []
    for start in range(0, len(qs), step):
        part = qs[start : start + step]
        scores.extend(predictor.score_prompts([q["prompt"] for q in part], [q["options"] for q in part]))
        if on_scored is not None:
            on_scored(len(part))
    hits = [q["options"][int(np.argmax(s))] == q["answer"] for q, s in zip(qs, scores)]
    return float(np.mean(hits))


def measure(
    model_dir: Path, sid_map: SidMap, sft: SftConfig, decode: DecodeConfig, seed: int, samples: pl.DataFrame,
    console: Console | None = None, who: str = "discernment",
) -> dict[str, Any] | None:
    """Discernment accuracy of a saved model on the held-out users' questions (None when switched off).

    ``sft``: the questions' prompt layout and held-out share; ``seed``: the run's seed (the held-out
    draw, as in :func:`conrec.llm.training.tasks.build_examples`); ``decode``: where and in what batches the
    options are scored. ``console``: where a line says how many questions are asked and a bar (``who``: its label,
    e.g. "SFT") counts them, as the training bar before it (:func:`conrec.progress.stage_progress`: timed plain
    lines off a terminal). Why: after SFT and after each GRPO stage this ran minutes without a word (334 s for 56
    questions with Gemma-3-270M on a CPU), and the stage looked hung.
    """
    from conrec.llm.inference.predict import Predictor

    if sft.discernment_eval <= 0:
        return None
    qs = heldout_questions(samples, sid_map.sid_lookup(), sft.prompt, sft.discernment_holdout, sft.discernment_eval, seed)
    if not qs:
        return None
    console = console or Console(quiet=True)
    console.print(f"{who}: discernment check on {len(qs)} held-out four-choice questions (at most sft.discernment_eval = "
                  f"{sft.discernment_eval})", markup=False, highlight=False, soft_wrap=True)
    # the LM's own discernment: the decoding-time popularity prior is not part of the model
    predictor = Predictor.from_dir(model_dir, sid_map, sft.prompt, decode.model_copy(update={"popularity_prior": 0.0}))
    with stage_progress(console=console) as progress:
        task = progress.add_task(f"{who} discernment", total=len(qs))
        acc = accuracy(predictor, qs, chunk=decode.batch_size, on_scored=lambda n: progress.advance(task, n))
    return {"accuracy": acc, "n_questions": len(qs), "chance": 1.0 / N_OPTIONS}


def forgetting(before: float | None, after: float | None) -> float | None:
    """Relative accuracy drop ``(before - after) / before`` (the paper's forgetting rate; None if undefined)."""
    if before is None or after is None or before <= 0:
        return None
    return (before - after) / before


def made_no_update(stages: list[dict[str, Any]]) -> bool:
    """Whether GRPO stages (``grpo/stats.json``'s ``stages``) left the SFT weights as they were: every
    group of every stage had zero advantage (all rewards equal), so no policy gradient was ever applied.
    Their "forgetting" is then 0.0% by construction and says nothing about GRPO."""
    shares = [s.get("mean_zero_adv_share") for s in stages]
    return bool(shares) and all(isinstance(z, (int, float)) and z >= 1.0 for z in shares)


def chance_bound(n: int) -> float:
    """0.25 + 2 standard errors of chance accuracy on ``n`` four-choice questions: accuracies up to it
    are within chance, and a drop from there says nothing."""
    return 0.25 + 1.96 * (0.25 * 0.75 / n) ** 0.5


def summary(sft_stats: dict[str, Any] | None, grpo_stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accuracy after SFT and after each GRPO stage, and the forgetting rate of the final model, from
    ``sft/stats.json`` and ``grpo/stats.json`` (None when nothing was measured). A stage reached
    without a single update (:func:`made_no_update`) gets no forgetting figure, and ``no_update``."""
    sft = ((sft_stats or {}).get("discernment") or {}).get("accuracy")
    raw = (grpo_stats or {}).get("stages", [])
    stages = [
        (s.get("stage"), (s.get("discernment") or {}).get("accuracy"), (s.get("discernment") or {}).get("n_questions"),
         made_no_update(raw[: j + 1]))
        for j, s in enumerate(raw)
    ]
    stages = [s for s in stages if s[1] is not None]
    if sft is None and not stages:
        return None
    final = stages[-1][1] if stages else None
    final_no_update = stages[-1][3] if stages else False
    n = ((sft_stats or {}).get("discernment") or {}).get("n_questions") or (stages[-1][2] if stages else None)
    return {
        "sft": sft,
        "stages": [{"stage": name, "accuracy": acc, "forgetting": None if same else forgetting(sft, acc), "no_update": same}
                   for name, acc, _, same in stages],
        "grpo": final,
        "forgetting": None if final_no_update else forgetting(sft, final),
        "no_update": final_no_update,
        "n_questions": n,
    }


def markdown(s: dict[str, Any], prompt_cfg: PromptConfig | None = None) -> str:
    """The report section: accuracy after each training step and the forgetting rate.

    ``prompt_cfg``: the evaluated models' layout. A timeline layout is named, because its models are asked in
    the segmented layout (:func:`question`): the figures would otherwise read as measured in the model's own."""
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    pct = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    lines = [
        "## Discernment accuracy and forgetting",
        "",
        f"Four-choice 'which of these did the user reject' questions on held-out users ({s.get('n_questions')} questions, "
        "chance 0.25); forgetting = relative accuracy drop from SFT (paper: plain GRPO 28.5%, progressive 13.6%).",
        "",
        "| after | accuracy | forgetting vs SFT |",
        "|---|---:|---:|",
        f"| SFT | {fmt(s.get('sft'))} | |",
    ]
    lines += [f"| GRPO stage {st['stage']} | {fmt(st['accuracy'])} | "
              f"{'– (no update)' if st.get('no_update') else pct(st['forgetting'])} |" for st in s.get("stages", [])]
    if any(st.get("no_update") for st in s.get("stages", [])):
        lines += ["", "No update: every GRPO group up to that stage had zero advantage (all rewards equal), so no policy "
                  "gradient was applied and its model is the SFT model; its accuracy is not a forgetting result."]
    if prompt_cfg is not None and prompt_cfg.is_timeline:
        lines += ["", f"The questions are asked in the segmented layout (a `<neg>` and a `<pos>` segment, up to "
                  f"sft.prompt.max_pos_items = {prompt_cfg.max_pos_items} positives, ending in 'Answer:'), not in these "
                  f"models' {prompt_cfg.variant} layout, which ends in a dislike tag: a model trained without "
                  "sft.tasks.discernment never saw that layout."]
    sft, n = s.get("sft"), s.get("n_questions") or 0
    if sft is not None and n and sft <= chance_bound(n):
        # a drop from chance says nothing: "0.0%" here would read as "GRPO forgot nothing"
        lines += ["", f"SFT is within chance on these {n} questions (0.25 + 2 standard errors), so the forgetting "
                  "figures measure nothing here."]
    return "\n".join(lines)
