"""SFT examples: history tasks (next / future negative) and item-level alignment tasks.

Every example is ``{"prompt": str, "completion": str, "task": str, "source": str}`` (TRL's
prompt/completion format; ``task`` and ``source`` = sample id or item id are metadata for
inspection and are dropped before training).

Tasks (names are the fields of :class:`conrec.llm.config.TaskMix`, builders in :data:`TASKS`):

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
from dataclasses import dataclass

import numpy as np
import polars as pl

from conrec.errors import DataValidationError, require_columns
from conrec.llm.config import SftConfig, TaskMix
from conrec.llm.inference.item_text import CONTROL_TEXT, neutralise_all
from conrec.llm.inference.prompts import build_prompt
from conrec.sid.sid_map import SidMap


@dataclass(frozen=True)
class _Pools:
    """What one :func:`build_examples` call's task builders draw from."""

    train: pl.DataFrame
    rows: list[tuple]  # (sample_id, hist_items, hist_feedback, next_neg, future_negs) of the train samples
    ids: list[str]  # the catalogue's items (those with a SID)
    titles: list[str]
    cats: list[str]
    windows: list[dict[str, str]]
    sid_of: Callable[[str], str]
    cfg: SftConfig
    cfg_seed: int


Builder = Callable[[str, int, _Pools, np.random.Generator], list[dict[str, str]]]
"""A task's builder: (task name, how many examples, the pools, the shared generator) -> its examples."""


def _history(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    return _history_examples(task, p.rows, n, p.sid_of, p.cfg, rng)


def _sid_to_title(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    return [_ex(task, p.ids[i], sid_to_title_prompt(p.sid_of(p.ids[i])), " " + p.titles[i]) for i in _draw(len(p.ids), n, rng)]


def _title_to_sid(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    return [_ex(task, p.ids[i], title_to_sid_prompt(p.titles[i]), p.sid_of(p.ids[i])) for i in _draw(len(p.ids), n, rng)]


def _sid_to_category(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    with_cat = [i for i, c in enumerate(p.cats) if c]
    return [
        _ex(task, p.ids[with_cat[j]], sid_to_category_prompt(p.sid_of(p.ids[with_cat[j]])), " " + p.cats[with_cat[j]])
        for j in _draw(len(with_cat), n, rng)
    ]


def _discernment(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    from conrec.llm.training.discernment import heldout_users, questions

    held = heldout_users(p.train["user_id"].to_list(), p.cfg.discernment_holdout, p.cfg_seed)
    pool = p.train.filter(~pl.col("user_id").is_in(sorted(held)))
    return [_ex(task, q["source"], q["prompt"], q["completion"]) for q in questions(pool, p.sid_of, p.cfg.prompt, n, int(rng.integers(2**31)), repeat=True)]


def _timeline(task: str, n: int, p: _Pools, rng: np.random.Generator) -> list[dict[str, str]]:
    return [p.windows[j] for j in _draw(len(p.windows), n, rng)]


TASKS: dict[str, Builder] = {
    "next_negative": _history,
    "future_negative": _history,
    "sid_to_title": _sid_to_title,
    "title_to_sid": _title_to_sid,
    "sid_to_category": _sid_to_category,
    "discernment": _discernment,
    "timeline": _timeline,
}
"""Every SFT task's builder, by name, in the order their examples are drawn (each draws from one shared generator).
Why one mapping: the builder was an if/elif chain whose last branch built title -> SID examples for any other name,
so a task added to :class:`conrec.llm.config.TaskMix` without a branch trained on the wrong data; a weight with no
builder is now an error (:func:`task_counts`), and the import check below keeps the two lists the same (a raise, not
an assert: ``python -O`` strips those)."""
if set(TASKS) != set(TaskMix.model_fields):
    raise RuntimeError(
        f"conrec.llm.training.tasks.TASKS must have a builder for each weight of conrec.llm.config.TaskMix: no builder for "
        f"{sorted(set(TaskMix.model_fields) - set(TASKS))}, no weight for {sorted(set(TASKS) - set(TaskMix.model_fields))}"
    )


# --- alignment prompts (plain text, same style as the history prompt)


def sid_to_title_prompt(sid: str) -> str:
    return f"Title of item {sid}\nAnswer:"


def title_to_sid_prompt(title: str) -> str:
    return f"Item titled: {title}\nAnswer:"


def sid_to_category_prompt(sid: str) -> str:
    return f"Category of item {sid}\nAnswer:"


def task_counts(weights: dict[str, float], n_train: int, max_samples: int | None, n_windows: int = 0) -> dict[str, int]:
    """How many examples each task gets (pure; see the module docstring). The timeline task's weight
    counts its own pool, the ``n_windows`` timeline windows; every other task's the train samples. A weight
    with no builder in :data:`TASKS` is an error: it was dropped, and a mix of only such tasks built nothing."""
    if unknown := sorted(set(weights) - set(TASKS)):
        raise ValueError(f"sft.tasks: no SFT example builder for {unknown} (known: {', '.join(TASKS)})")
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
    rows = train.select("sample_id", "hist_items", "hist_feedback", "next_neg", "future_negs").rows()
    pools = _Pools(train, rows, ids, titles, cats, windows, sid_of, cfg, cfg_seed)
    out: list[dict[str, str]] = []
    for task, build in TASKS.items():
        if counts[task] > 0:
            out.extend(build(task, counts[task], pools, rng))
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
