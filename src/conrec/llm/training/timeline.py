"""The timeline task: every event of every user's training history is a target.

Why: one history prompt per user-week with a 3-token answer gives the LM ~24k targets on
MovieLens-100K, while SASRec learns from every position of every sequence. Here a user's
chronological events before the training cut-off are cut into windows and rendered in the
``timeline`` / ``neg_timeline`` layout of :mod:`conrec.llm.inference.prompts`::

    prompt:     Predict ...\\n[Disliked before (oldest first):<neg>older dislikes</neg>\\n]Timeline (oldest first):<hist>
    completion: <dis>SID<like>SID<like>SID<dis>SID ...

The loss falls on every SID of the completion, each conditioned on its feedback tag (dislikes and
positives weighted by ``sft.timeline``), so a window of W events teaches W items in one forward
pass. Positives as targets teach what each user is exposed to (about 5x more signal than dislikes
alone on MovieLens); the dislike tag then selects among those exposures. At inference the prompt is
the same string continued with the history and an open ``<dis>`` tag.

No leakage: the events come from :func:`conrec.data.fit_events.fit_events_for` with the split the
data stage trains up to (``data.split.train_until``), the same events the baselines are fitted on,
so no event at or after an evaluated point's cut-off reaches a training window. The segment of
``neg_timeline`` holds only dislikes before the window, so each target is predicted from the past.

Windows: a user's events are cut into consecutive blocks of ``stride`` new events; each block is the
completion of one window whose prompt also shows the up to ``max_timeline_events - stride`` events
before it as context (no loss there), so every event is a target exactly once per pass. The j-th target
of a block sees the window's events before it: that context plus the block's j - 1 earlier targets (the
``neg_timeline`` segment of older dislikes aside). So the context grows along a block: with the default
stride (null: the whole window, no context events) a window's j-th target sees j - 1 events, about half
a window on average (the demo: 46.7% of the targets that are not a user's first saw min(their earlier
events, 64), and the mean was 31.2 events); a smaller stride shows every target at least
``max_timeline_events - stride`` events (fewer only near the user's start), for about
``max_timeline_events / stride`` times the tokens per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl

from conrec.errors import require_columns
from conrec.llm.config import PromptConfig
from conrec.llm.inference.prompts import item_renderer, render_events, timeline_prefix, timeline_window


@dataclass(frozen=True)
class UserTimeline:
    """One user's training events, oldest first (ties in the events table's row order)."""

    user_id: str
    items: list[str]
    feedback: list[int]


def user_timelines(events: pl.DataFrame) -> list[UserTimeline]:
    """Each user's events in the canonical order (by ``ts``, ties by row order), users sorted by id."""
    require_columns(events, ("user_id", "item_id", "ts", "feedback"), "events")
    grouped = (
        events.with_row_index("_row")
        .sort(["user_id", "ts", "_row"])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id").cast(pl.String), pl.col("feedback").cast(pl.Int64))
    )
    return [UserTimeline(str(u), list(i), [int(f) for f in fb]) for u, i, fb in grouped.iter_rows()]


def window_bounds(n_events: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(context start, first target, end) of each window over ``n_events`` events (pure).

    Targets ``[first, end)`` are consecutive blocks of ``stride`` events covering every event once;
    the context starts ``window`` events before ``end`` (never before 0).
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window, got stride {stride}, window {window}")
    for first in range(0, n_events, stride):
        end = min(n_events, first + stride)
        yield max(0, end - window), first, end


def timeline_examples(
    timelines: list[UserTimeline], sid_of: Callable[[str], str], prompt_cfg: PromptConfig, stride: int, max_history: int | None = None
) -> list[dict[str, str]]:
    """The timeline task's prompt/completion examples (TRL's format, like :mod:`conrec.llm.training.tasks`).

    A user's window ``[start, end)`` with targets ``[first, end)``: the prompt is the layout's prefix
    (older dislikes for ``neg_timeline``) plus the context events ``[start, first)``, the completion
    the target events. Users with no dislike are kept: their positives still teach exposure.

    ``max_history`` (``data.split.max_history``): the window is laid out from the newest ``max_history``
    events up to its end only, as every prompt at inference is (an evaluated point's history holds
    that many; :class:`conrec.llm.inference.predict.Predictor` cuts longer ones). Why: the older-dislike
    segment was drawn from the whole history here (20 older dislikes for a heavy user) but from the
    last ``max_history`` events at inference (1 for the same user); and each window rescanned its whole
    prefix, quadratic in a user's length.
    """
    if not prompt_cfg.is_timeline:
        raise ValueError(f"the timeline task needs a timeline prompt layout, got sft.prompt.variant {prompt_cfg.variant!r}")
    if max_history is not None:  # a target never sees more context than a prompt holds at inference
        stride = min(stride, max_history)
    out: list[dict[str, str]] = []
    write = item_renderer(sid_of, prompt_cfg)
    for tl in timelines:
        for start, first, end in window_bounds(len(tl.items), prompt_cfg.max_timeline_events, stride):
            lo = 0 if max_history is None else min(first, max(0, end - max_history))  # the targets always, however short the history
            older, window = timeline_window(tl.items[lo:end], tl.feedback[lo:end], prompt_cfg)
            start = max(start, lo)
            assert len(window) == end - start  # the layout's window is exactly these events
            context, targets = window[: first - start], window[first - start :]
            out.append(
                {
                    "prompt": timeline_prefix(older, write, prompt_cfg) + render_events(context, write),
                    "completion": render_events(targets, write),
                    "task": "timeline",
                    "source": tl.user_id,
                }
            )
    return out
