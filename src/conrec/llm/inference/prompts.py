"""Context-discerning prompts: negative and positive histories as separate, marked segments.

Why: negative feedback is sparse and positive feedback plentiful. Fed as one sequence, positives
dominate both the context window and the model's attention ("context understanding bias"). The
segmented prompt gives each kind its own segment, delimited by dedicated marker tokens, and its own
budget, so the short negative segment is never truncated away by a long positive history.

Prompt format (a plain string, identical for SFT, GRPO and inference)::

    Predict an item this user will dislike.
    Disliked (oldest first):<neg><a_3><b_1><c_7><a_9><b_0><c_2></neg>
    Liked (oldest first):<pos><a_1><b_4><c_4></pos>
    Answer:

* Items are rendered as their SIDs (``<a_..><b_..><c_..>``) with no separator: the level letter
  starts every item, so the boundaries are unambiguous and no token is spent on spaces.
* With ``item_id_tokens`` each history item's SID is followed by its own item token
  (``<a_3><b_1><c_7><item_3_1_7>``, :func:`item_renderer`); answers are SIDs alone.
* Within a segment the order is chronological, most recent last (closest to the answer).
* Each segment keeps the *most recent* ``max_neg_items`` / ``max_pos_items`` items.
* The marker tokens (``<neg>``, ``</neg>``, ``<pos>``, ``</pos>``, ``<hist>``, ``</hist>``,
  ``<dis>``, ``<like>``) are added to the tokenizer as ordinary tokens by :mod:`conrec.llm.model.vocab`.
* The prompt always ends with the text token ``Answer:`` (never with an SID token), so the
  generated SID starts on a token boundary and a logits processor can find where it begins.

Variants (``cfg.variant``; each one's renderer is in :data:`LAYOUTS`):

* ``neg_only``: only the negative segment (positives ignored).
* ``segmented``: negative segment, then positive segment (both always present, possibly empty).
* ``merged``: one chronological sequence ``<hist><dis>SID<like>SID...</hist>`` of the most recent
  ``max_merged_items`` events, each tagged with its feedback: the conventional baseline, where
  positives *can* crowd out negatives.
* ``timeline``: the most recent ``max_timeline_events`` events as ``<hist><dis>SID<like>SID...``,
  ending in an open dislike tag ``<dis>`` instead of ``Answer:``: the answer is simply the next
  disliked event of the timeline. Why: the same string, continued, is a training sequence in which
  *every* event is a target (the ``timeline`` SFT task, :mod:`conrec.llm.training.timeline`), positives
  included, each conditioned on its feedback tag (the HSTU layout of item and action tokens in one
  sequence); one prompt per user-week gives ~10^3 times fewer targets.
* ``neg_timeline``: the dislikes *older* than that window as a negative segment, then the timeline.
  Why: where dislikes are rare (a few % of feedback) a 64-event window holds two or three of them,
  so the positives crowd them out; the segment keeps them in context whatever the positive volume
  (the paper's argument for segments), and since it holds only events before the window, every
  target of a training window is still predicted from the past alone.

The timeline layouts show every event of their window: ``max_pos_items`` thins the positives only
when a caller overrides it (progressive GRPO's stage budgets), because the SFT windows they are
trained on keep every positive as a target.

Why a plain string and not the tokenizer's chat template: the same prompt must work for every
backbone (including tiny models with no template), for TRL's SFT and GRPO trainers (plain
prompt/completion datasets, no conversational lists) and at serving time; the answer is a string of
new SID tokens, not a natural-language turn the instruct tuning would help with; and the template
would add ~15 tokens per prompt on a CPU budget. The alignment tasks use the same plain layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conrec.llm.config import PROMPT_VARIANTS, TIMELINE_VARIANTS, PromptConfig
from conrec.sid.tokens import item_token_of_sid

NEG_OPEN, NEG_CLOSE = "<neg>", "</neg>"
POS_OPEN, POS_CLOSE = "<pos>", "</pos>"
SEQ_OPEN, SEQ_CLOSE = "<hist>", "</hist>"
DISLIKE_TAG, LIKE_TAG = "<dis>", "<like>"

MARKER_TOKENS: tuple[str, ...] = (NEG_OPEN, NEG_CLOSE, POS_OPEN, POS_CLOSE, SEQ_OPEN, SEQ_CLOSE, DISLIKE_TAG, LIKE_TAG)
"""Prompt marker tokens, added to the vocabulary as ordinary (non-special) tokens."""

MARKER_DESCRIPTIONS: dict[str, str] = {
    NEG_OPEN: " items the user disliked",
    NEG_CLOSE: " end of disliked items",
    POS_OPEN: " items the user liked",
    POS_CLOSE: " end of liked items",
    SEQ_OPEN: " the user's history",
    SEQ_CLOSE: " end of history",
    DISLIKE_TAG: " disliked",
    LIKE_TAG: " liked",
}
"""Text whose token embeddings initialise each marker's embedding (see :mod:`conrec.llm.model.vocab`)."""

INSTRUCTION = "Predict an item this user will dislike."
ANSWER_CUE = "Answer:"
OLDER_NEG_HEADER = "Disliked before (oldest first):"
TIMELINE_HEADER = "Timeline (oldest first):"


def build_prompt(
    hist_items: Sequence[str],
    hist_feedback: Sequence[int],
    sid_of: Callable[[str], str],
    cfg_prompt: PromptConfig,
    max_pos_items: int | None = None,
) -> str:
    """The history prompt for one user at one time.

    ``hist_items`` are oldest first with ``hist_feedback`` aligned (-1 dislike, +1 positive).
    ``sid_of`` maps an item id to its SID string (e.g. ``SidMap.sid_of`` or
    :meth:`conrec.sid.sid_map.SidMap.sid_lookup`); it should raise for unknown items. ``max_pos_items``
    overrides ``cfg_prompt.max_pos_items`` (progressive GRPO grows it stage by stage; 0 = an empty
    positive segment). In ``merged`` it caps the positives kept before the merged budget applies.
    """
    if len(hist_items) != len(hist_feedback):
        raise ValueError(f"hist_items has {len(hist_items)} entries but hist_feedback has {len(hist_feedback)}")
    if (pos_budget := _pos_budget(cfg_prompt, max_pos_items)) < 0:
        raise ValueError(f"max_pos_items must be >= 0, got {pos_budget}")
    layout = LAYOUTS.get(cfg_prompt.variant)
    if layout is None:  # a model_construct'ed or unvalidated config: rendering another layout would train on it silently
        raise ValueError(f"sft.prompt.variant: no prompt layout {cfg_prompt.variant!r} (known: {', '.join(LAYOUTS)})")
    return layout(hist_items, hist_feedback, item_renderer(sid_of, cfg_prompt), cfg_prompt, max_pos_items)


Layout = Callable[[Sequence[str], Sequence[int], Callable[[str], str], PromptConfig, int | None], str]
"""A layout's renderer: (history items, their feedback, the item renderer, the prompt settings, the caller's positive
budget or None) -> the prompt."""


def _neg_only(items: Sequence[str], feedback: Sequence[int], sid_of: Callable[[str], str], cfg: PromptConfig, max_pos_items: int | None) -> str:
    return _answered([_neg_segment(items, feedback, sid_of, cfg)])


def _segmented(items: Sequence[str], feedback: Sequence[int], sid_of: Callable[[str], str], cfg: PromptConfig, max_pos_items: int | None) -> str:
    pos = [i for i, f in zip(items, feedback) if f > 0]
    budget = _pos_budget(cfg, max_pos_items)
    return _answered([_neg_segment(items, feedback, sid_of, cfg), f"Liked (oldest first):{POS_OPEN}{_render(_last(pos, budget), sid_of)}{POS_CLOSE}"])


def _merged(items: Sequence[str], feedback: Sequence[int], sid_of: Callable[[str], str], cfg: PromptConfig, max_pos_items: int | None) -> str:
    events = _merged_events(items, feedback, _pos_budget(cfg, max_pos_items), cfg.max_merged_items)
    return _answered([f"History (oldest first):{SEQ_OPEN}{render_events(events, sid_of)}{SEQ_CLOSE}"])


def _timeline(items: Sequence[str], feedback: Sequence[int], sid_of: Callable[[str], str], cfg: PromptConfig, max_pos_items: int | None) -> str:
    older, window = timeline_window(items, feedback, cfg, max_pos_items)
    return timeline_prefix(older, sid_of, cfg) + render_events(window, sid_of) + DISLIKE_TAG


LAYOUTS: dict[str, Layout] = {"neg_only": _neg_only, "segmented": _segmented, "merged": _merged, **dict.fromkeys(TIMELINE_VARIANTS, _timeline)}
"""Every prompt layout's renderer, by ``sft.prompt.variant``; the timeline renderer for exactly the config's
:data:`conrec.llm.config.TIMELINE_VARIANTS`. Why a mapping: :func:`build_prompt` branched on two names and rendered
any other as neg_only, so a layout added to the config without a renderer trained silently on the wrong prompt; now
it is refused, and the import check keeps this mapping equal to the config's list (a raise, not an assert:
``python -O`` strips those)."""
if set(LAYOUTS) != set(PROMPT_VARIANTS):
    raise RuntimeError(
        f"conrec.llm.inference.prompts.LAYOUTS must render each conrec.llm.config.PromptVariant: no renderer for "
        f"{sorted(set(PROMPT_VARIANTS) - set(LAYOUTS))}, not a variant: {sorted(set(LAYOUTS) - set(PROMPT_VARIANTS))}"
    )


def _pos_budget(cfg: PromptConfig, max_pos_items: int | None) -> int:
    """The positives a prompt keeps: the caller's ``max_pos_items`` (progressive GRPO's stage), else the config's."""
    return cfg.max_pos_items if max_pos_items is None else max_pos_items


def _neg_segment(items: Sequence[str], feedback: Sequence[int], sid_of: Callable[[str], str], cfg: PromptConfig) -> str:
    neg = [i for i, f in zip(items, feedback) if f < 0]
    return f"Disliked (oldest first):{NEG_OPEN}{_render(_last(neg, cfg.max_neg_items), sid_of)}{NEG_CLOSE}"


def _answered(body: list[str]) -> str:
    """The instruction, the history lines, then the answer cue, one per line (every layout but the timeline ones)."""
    return "\n".join([INSTRUCTION, *body, ANSWER_CUE])


def shows_positive(prompt: str) -> bool:
    """Whether a prompt of any layout shows at least one liked item: a non-empty positive segment (``segmented``)
    or a like tag (``merged``, the timeline layouts). The markers are tokens of their own, never part of a SID."""
    return LIKE_TAG in prompt or (POS_OPEN in prompt and POS_OPEN + POS_CLOSE not in prompt)


def item_renderer(sid_of: Callable[[str], str], cfg_prompt: PromptConfig) -> Callable[[str], str]:
    """How a history item is written: its SID, then its own item token with ``item_id_tokens``.

    Why an item token (hybrid ID + SID, LIGER arXiv 2411.18814): SIDs share tokens between similar
    items, so what the model learns about one item spreads to its neighbours; the item token adds
    one embedding that only this item owns, for what its SID does not say (its exposure, the users
    who meet it). It follows the SID, so the position that predicts the next event sees it, while
    answers stay SIDs: beam search, exhaustive search and slate scoring are unchanged, and the item
    token is never a training target (the SFT loss drops it).
    """
    if not cfg_prompt.item_id_tokens:
        return sid_of

    def render(item: str) -> str:
        sid = sid_of(item)
        return sid + item_token_of_sid(sid)

    return render


def timeline_window(
    hist_items: Sequence[str], hist_feedback: Sequence[int], cfg_prompt: PromptConfig, max_pos_items: int | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """(older dislikes for the segment, the timeline window as (item, feedback) pairs), oldest first.

    The window is the last ``max_timeline_events`` events (after dropping the oldest positives beyond
    ``max_pos_items`` when a caller sets it); the segment holds the last ``max_neg_items`` dislikes
    strictly before the window (none for ``timeline``). Shared by prompts and training windows, so a
    model meets at inference exactly the layout it was trained on.
    """
    kept = list(range(len(hist_items)))
    if max_pos_items is not None:
        n_pos = sum(1 for f in hist_feedback if f > 0)
        drop = max(0, n_pos - max_pos_items)
        kept = []
        for i, f in enumerate(hist_feedback):
            if f > 0 and drop > 0:
                drop -= 1
                continue
            kept.append(i)
    window_idx = kept[max(0, len(kept) - cfg_prompt.max_timeline_events) :]
    start = window_idx[0] if window_idx else len(hist_items)
    older: list[str] = []
    if cfg_prompt.variant == "neg_timeline":
        older = _last([hist_items[i] for i in range(start) if hist_feedback[i] < 0], cfg_prompt.max_neg_items)
    return older, [(hist_items[i], int(hist_feedback[i])) for i in window_idx]


def timeline_prefix(older_negatives: Sequence[str], sid_of: Callable[[str], str], cfg_prompt: PromptConfig) -> str:
    """Everything of a timeline prompt before its first event: instruction, the segment of older
    dislikes (``neg_timeline``), the timeline header and its opening marker."""
    lines = [INSTRUCTION]
    if cfg_prompt.variant == "neg_timeline":
        lines.append(f"{OLDER_NEG_HEADER}{NEG_OPEN}{_render(older_negatives, sid_of)}{NEG_CLOSE}")
    lines.append(f"{TIMELINE_HEADER}{SEQ_OPEN}")
    return "\n".join(lines)


def render_events(events: Sequence[tuple[str, int]], sid_of: Callable[[str], str]) -> str:
    """``<dis>SID<like>SID...``: each event's feedback tag, then its SID."""
    return "".join((DISLIKE_TAG if f < 0 else LIKE_TAG) + sid_of(i) for i, f in events)


def recent_negatives_only(
    hist_items: Sequence[str], hist_feedback: Sequence[int], hist_ts: Sequence[int], t: int, days: float | None
) -> tuple[list[str], list[int]]:
    """The history with every negative older than ``days`` before ``t`` dropped (positives kept).

    Why: CoNRec's first GRPO stage shows only the last 3 days of negatives, the freshest dislikes,
    least shaped by the exposure suppression that follows a dislike. ``days=None`` keeps everything.
    """
    if days is None:
        return list(hist_items), list(hist_feedback)
    if not (len(hist_items) == len(hist_feedback) == len(hist_ts)):
        raise ValueError("hist_items, hist_feedback and hist_ts must be aligned")
    start = t - days * 86_400
    kept = [(i, f) for i, f, s in zip(hist_items, hist_feedback, hist_ts) if f > 0 or s >= start]
    return [i for i, _ in kept], [int(f) for _, f in kept]


def _last(items: list[str], budget: int) -> list[str]:
    """The newest ``budget`` items (all of them when there are fewer)."""
    return items[max(0, len(items) - budget) :] if budget > 0 else []


def _render(items: Sequence[str], sid_of: Callable[[str], str]) -> str:
    return "".join(sid_of(i) for i in items)


def _merged_events(
    items: Sequence[str], feedback: Sequence[int], pos_budget: int, budget: int
) -> list[tuple[str, int]]:
    """The most recent ``budget`` events, keeping only the most recent ``pos_budget`` positives."""
    n_pos = sum(1 for f in feedback if f > 0)
    drop_pos = max(0, n_pos - pos_budget)  # the oldest positives beyond the budget
    kept: list[tuple[str, int]] = []
    for i, f in zip(items, feedback):
        if f > 0 and drop_pos > 0:
            drop_pos -= 1
            continue
        kept.append((i, int(f)))
    return kept[max(0, len(kept) - budget) :]
