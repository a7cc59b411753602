"""SFT examples: history tasks (next / future negative) and item-level alignment tasks.

Every example is ``{"prompt": str, "completion": str, "task": str, "source": str}`` (TRL's
prompt/completion format; ``task`` and ``source`` = sample id or item id are metadata for
inspection and are dropped before training).

Tasks (names are the fields of :class:`conrec.llm.config.TaskMix`):

* ``next_negative``: history prompt -> SID of ``next_neg`` (the conventional objective).
* ``future_negative``: history prompt -> SID of an item of ``future_negs`` (the multi-day
  future-negative set CoNRec optimises). A sample's successive examples walk through its set in a
  seeded random order, so weight ``w`` teaches up to ``w`` different future items per sample: the
  sample-efficient way to learn a set-valued target with one-item completions.
* ``sid_to_title``, ``title_to_sid``, ``sid_to_category``: item-level alignment, teaching what each
  SID means (and so what an unseen disliked item is like).
* ``discernment``: four-choice "which of these did the user reject" (one disliked item, three liked
  ones), answered by the option's SID (:mod:`conrec.llm.training.discernment`); samples of the held-out users
  (``sft.discernment_holdout``) never give one, so its accuracy can be measured on them.

* ``timeline``: a window of a user's training events rendered in the timeline layout, every event
  of it a target (:mod:`conrec.llm.training.timeline`); its weight counts windows, not train samples.

Both history tasks share the *same* prompt (:func:`conrec.llm.inference.prompts.build_prompt`): at inference
we ask one question, "what will this user dislike", and ``next_neg`` is a member of the future set,
so the two tasks are two weightings of the same target distribution.

Mixing: with weights ``w`` (``cfg.tasks``) and ``S`` train samples, task ``t`` gets
``round(w_t * S)`` examples (weight 1 = one example per train sample), then everything is scaled
down proportionally to ``cfg.max_samples`` if set. Samples / items are drawn without replacement
(cycling through fresh permutations when a task needs more than there are). Seeded.

No leakage: a history example whose target item is already in the rendered history is skipped
(re-disliked items would otherwise be answerable by copying); only ``split == "train"`` samples are
used (their labels stop at the valid cut-off, see :mod:`conrec.data.samples`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl

from conrec.errors import DataValidationError, require_columns
from conrec.llm.config import SftConfig
from conrec.llm.inference.item_text import CONTROL_TEXT, neutralise_all
from conrec.llm.inference.prompts import build_prompt
from conrec.sid.sid_map import SidMap

TASKS = ("next_negative", "future_negative", "sid_to_title", "title_to_sid", "sid_to_category", "discernment", "timeline")
HISTORY_TASKS = ("next_negative", "future_negative")


# --- alignment prompts (plain text, same style as the history prompt)


def sid_to_title_prompt(sid: str) -> str:
    return f"Title of item {sid}\nAnswer:"


def title_to_sid_prompt(title: str) -> str:
    return f"Item titled: {title}\nAnswer:"


def sid_to_category_prompt(sid: str) -> str:
    return f"Category of item {sid}\nAnswer:"


def task_counts(weights: dict[str, float], n_train: int, max_samples: int | None, n_windows: int = 0) -> dict[str, int]:
    """How many examples each task gets (pure; see the module docstring). The timeline task's weight
    counts its own pool, the ``n_windows`` timeline windows; every other task's the train samples."""
    weights = {t: weights.get(t, 0.0) for t in TASKS}
    pool = {t: (n_windows if t == "timeline" else n_train) for t in TASKS}
    counts = {t: int(round(weights[t] * pool[t])) for t in TASKS}
    total = sum(counts.values())
    if max_samples is not None and total > max_samples:
        raw = {t: weights[t] * pool[t] * max_samples / total for t in TASKS}
        counts = {t: int(np.floor(v)) for t, v in raw.items()}
        # largest remainders get the leftover so the total is exactly max_samples
        left = max_samples - sum(counts.values())
        for t in sorted(TASKS, key=lambda t: raw[t] - counts[t], reverse=True)[:left]:
            counts[t] += 1
    return counts


def build_examples(
    samples: pl.DataFrame,
    items: pl.DataFrame,
    sid_map: SidMap,
    cfg: SftConfig,
    seed: int = 0,
    cfg_seed: int = 0,
    timeline_windows: list[dict[str, str]] | None = None,
    control: re.Pattern[str] = CONTROL_TEXT,
) -> list[dict[str, str]]:
    """The shuffled SFT example list for ``cfg.tasks`` (only ``split == "train"`` samples).

    Titles and categories enter the alignment tasks through :func:`conrec.llm.inference.item_text.neutralise_all` with
    ``control`` (the sft stage passes its backbone's special tokens too), so no item text becomes a control token.

    ``cfg_seed`` (the run's top-level ``seed``) draws the discernment held-out users, the same draw
    the accuracy measurement makes (:func:`conrec.llm.training.discernment.measure`). ``timeline_windows``:
    the timeline task's pool (:func:`conrec.llm.training.timeline.timeline_examples`), drawn like the
    alignment tasks' items (each window once per unit of weight).
    """
    require_columns(samples, ("split", "hist_items", "hist_feedback", "next_neg", "future_negs", "sample_id"), "samples")
    require_columns(items, ("item_id", "title"), "items")
    train = samples.filter(pl.col("split") == "train")
    if train.height == 0:
        raise DataValidationError("samples: no 'train' split samples to build SFT examples from")
    rng = np.random.default_rng(seed)
    windows = timeline_windows or []
    if cfg.tasks.timeline > 0 and not windows:
        raise DataValidationError("sft.tasks.timeline is set but there are no timeline windows (no training events?)")
    counts = task_counts(cfg.tasks.model_dump(), train.height, cfg.max_samples, len(windows))
    sid_of = sid_map.sid_lookup()

    catalogue = items.filter(pl.col("item_id").is_in(sid_map.items))
    ids = catalogue["item_id"].to_list()
    titles = neutralise_all(catalogue["title"].to_list(), control)
    cats = neutralise_all(catalogue["category"].to_list(), control) if "category" in catalogue.columns else [""] * len(ids)
    with_cat = [i for i, c in enumerate(cats) if c]

    rows = train.select("sample_id", "hist_items", "hist_feedback", "next_neg", "future_negs").rows()
    out: list[dict[str, str]] = []
    for task in TASKS:
        n = counts[task]
        if n == 0:
            continue
        if task == "discernment":
            from conrec.llm.training.discernment import heldout_users, questions

            held = heldout_users(train["user_id"].to_list(), cfg.discernment_holdout, cfg_seed)
            pool = train.filter(~pl.col("user_id").is_in(sorted(held)))
            for q in questions(pool, sid_of, cfg.prompt, n, int(rng.integers(2**31)), repeat=True):
                out.append(_ex(task, q["source"], q["prompt"], q["completion"]))
        elif task == "timeline":
            out.extend(windows[j] for j in _draw(len(windows), n, rng))
        elif task in HISTORY_TASKS:
            out.extend(_history_examples(task, rows, n, sid_of, cfg, rng))
        elif task == "sid_to_category":
            for j in _draw(len(with_cat), n, rng):
                i = with_cat[j]
                out.append(_ex(task, ids[i], sid_to_category_prompt(sid_of(ids[i])), " " + cats[i]))
        else:
            for i in _draw(len(ids), n, rng):
                sid = sid_of(ids[i])
                if task == "sid_to_title":
                    out.append(_ex(task, ids[i], sid_to_title_prompt(sid), " " + titles[i]))
                else:
                    out.append(_ex(task, ids[i], title_to_sid_prompt(titles[i]), sid))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def _history_examples(task: str, rows: list[tuple], n: int, sid_of: Callable[[str], str], cfg: SftConfig, rng: np.random.Generator) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    prompts: dict[int, str] = {}
    # future_negative: each sample walks through its own shuffled future set, so with weight w a
    # sample's w examples teach w *different* future items (all of them when |set| <= w) while every
    # sample keeps the same total weight
    cycles: dict[int, list[str]] = {}
    # try at most a few passes: skipped (leaking) samples must not make this loop forever
    for idx in _draw(len(rows), n * 3, rng):
        if len(out) >= n:
            break
        sample_id, hist, fb, next_neg, future = rows[idx]
        hist_set = set(hist)
        if task == "next_negative":
            target = next_neg
        else:
            if not cycles.get(idx):
                choices = [i for i in (future or []) if i not in hist_set]
                if not choices:
                    continue
                cycles[idx] = [choices[j] for j in rng.permutation(len(choices))]
            target = cycles[idx].pop()
        if target in hist_set:
            continue
        if idx not in prompts:
            prompts[idx] = build_prompt(hist, fb, sid_of, cfg.prompt)
        target_sid = sid_of(target)
        if target_sid in prompts[idx]:
            continue
        out.append(_ex(task, str(sample_id), prompts[idx], target_sid))
    return out


def _draw(n_pool: int, n: int, rng: np.random.Generator) -> Iterator[int]:
    """``n`` indices into a pool, without replacement, cycling through fresh permutations."""
    if n_pool == 0:
        return
    emitted = 0
    while emitted < n:
        for i in rng.permutation(n_pool):
            if emitted >= n:
                return
            yield int(i)
            emitted += 1


def _ex(task: str, source: str, prompt: str, completion: str) -> dict[str, str]:
    return {"prompt": prompt, "completion": completion, "task": task, "source": source}
