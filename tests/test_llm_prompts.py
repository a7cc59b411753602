"""Context-discerning prompts: marked segments, separate budgets, order, the three variants."""

from __future__ import annotations

import re

import pytest

from conrec.llm.config import PromptConfig
from conrec.llm.inference.prompts import (
    ANSWER_CUE,
    DISLIKE_TAG,
    LIKE_TAG,
    NEG_CLOSE,
    NEG_OPEN,
    POS_CLOSE,
    POS_OPEN,
    SEQ_CLOSE,
    SEQ_OPEN,
    build_prompt,
)


def sid_of(item: str) -> str:
    n = int(item[1:])
    return f"<a_{n // 10}><b_{n % 10}>"


def segment(prompt: str, open_: str, close: str) -> list[str]:
    """Item ids inside one segment, in order (inverse of sid_of)."""
    body = prompt.split(open_, 1)[1].split(close, 1)[0]
    return [f"i{int(a) * 10 + int(b)}" for a, b in re.findall(r"<a_(\d+)><b_(\d+)>", body)]


# 3 negatives among 40 positives, oldest first
ITEMS = [f"i{n}" for n in range(43)]
FEEDBACK = [1] * 43
for pos in (5, 20, 41):
    FEEDBACK[pos] = -1
NEG = [ITEMS[p] for p in (5, 20, 41)]
POS = [i for i, f in zip(ITEMS, FEEDBACK) if f > 0]


def test_segmented_marks_both_segments_in_order_and_ends_with_cue():
    p = build_prompt(ITEMS, FEEDBACK, sid_of, PromptConfig(variant="segmented", max_neg_items=10, max_pos_items=5))
    assert p.count(NEG_OPEN) == p.count(NEG_CLOSE) == 1
    assert p.count(POS_OPEN) == p.count(POS_CLOSE) == 1
    assert p.index(NEG_CLOSE) < p.index(POS_OPEN)
    assert segment(p, NEG_OPEN, NEG_CLOSE) == NEG  # chronological, most recent last
    assert segment(p, POS_OPEN, POS_CLOSE) == POS[-5:]  # the most recent positives, in order
    assert p.endswith(ANSWER_CUE)


def test_negative_budget_never_cut_by_positives():
    for pos_budget in (0, 3, 30, 100):
        p = build_prompt(ITEMS, FEEDBACK, sid_of, PromptConfig(max_neg_items=3, max_pos_items=pos_budget))
        assert segment(p, NEG_OPEN, NEG_CLOSE) == NEG
        assert segment(p, POS_OPEN, POS_CLOSE) == (POS[-pos_budget:] if pos_budget else [])


def test_negative_budget_keeps_most_recent_negatives():
    p = build_prompt(ITEMS, FEEDBACK, sid_of, PromptConfig(max_neg_items=2))
    assert segment(p, NEG_OPEN, NEG_CLOSE) == NEG[-2:]


def test_max_pos_items_override_wins_over_config():
    cfg = PromptConfig(max_pos_items=30)
    p = build_prompt(ITEMS, FEEDBACK, sid_of, cfg, max_pos_items=2)
    assert segment(p, POS_OPEN, POS_CLOSE) == POS[-2:]
    p0 = build_prompt(ITEMS, FEEDBACK, sid_of, cfg, max_pos_items=0)
    assert segment(p0, POS_OPEN, POS_CLOSE) == []
    assert segment(p0, NEG_OPEN, NEG_CLOSE) == NEG


def test_neg_only_has_no_positive_segment():
    p = build_prompt(ITEMS, FEEDBACK, sid_of, PromptConfig(variant="neg_only"))
    assert POS_OPEN not in p and SEQ_OPEN not in p
    assert segment(p, NEG_OPEN, NEG_CLOSE) == NEG
    for item in POS:
        assert sid_of(item) not in p


def test_merged_is_one_tagged_chronological_sequence_where_positives_can_crowd_out_negatives():
    cfg = PromptConfig(variant="merged", max_merged_items=10, max_pos_items=100)
    p = build_prompt(ITEMS, FEEDBACK, sid_of, cfg)
    assert NEG_OPEN not in p and POS_OPEN not in p
    body = p.split(SEQ_OPEN, 1)[1].split(SEQ_CLOSE, 1)[0]
    tags = re.findall(r"(<dis>|<like>)<a_(\d+)><b_(\d+)>", body)
    got = [(t, f"i{int(a) * 10 + int(b)}") for t, a, b in tags]
    expect = [(DISLIKE_TAG if f < 0 else LIKE_TAG, i) for i, f in zip(ITEMS[-10:], FEEDBACK[-10:])]
    assert got == expect
    # the last 10 events hold only one of the three negatives: the merged budget is shared
    assert sum(t == DISLIKE_TAG for t, _ in got) == 1


def test_variants_differ():
    prompts = {v: build_prompt(ITEMS, FEEDBACK, sid_of, PromptConfig(variant=v)) for v in ("neg_only", "segmented", "merged")}
    assert len(set(prompts.values())) == 3


def test_mismatched_history_is_an_error():
    with pytest.raises(ValueError, match="hist_feedback"):
        build_prompt(["i1", "i2"], [1], sid_of, PromptConfig())


def events_in(prompt: str) -> list[tuple[str, str]]:
    """(tag, item) of every tagged event in the prompt's sequence segment."""
    body = prompt.split(SEQ_OPEN, 1)[1]
    return [(t, f"i{int(a) * 10 + int(b)}") for t, a, b in re.findall(r"(<dis>|<like>)<a_(\d+)><b_(\d+)>", body)]


@pytest.mark.parametrize("n", [1, 7, 15])
def test_every_budget_keeps_the_newest_min_of_count_and_budget(n):
    """A budget above the count keeps every item. Regression: a budget between the count and twice it
    kept only ``budget - count`` items (15 dislikes under a budget of 20 showed 5), in each layout."""
    items = [f"i{k}" for k in range(2 * n)]
    feedback = [-1] * n + [1] * n  # n older dislikes, then n positives
    dis, pos = items[:n], items[n:]
    for budget in range(1, 2 * n + 2):
        seg = build_prompt(items, feedback, sid_of, PromptConfig(variant="segmented", max_neg_items=budget, max_pos_items=budget))
        assert segment(seg, NEG_OPEN, NEG_CLOSE) == dis[max(0, n - budget) :]
        assert segment(seg, POS_OPEN, POS_CLOSE) == pos[max(0, n - budget) :]
        merged = build_prompt(items, feedback, sid_of, PromptConfig(variant="merged", max_merged_items=budget, max_pos_items=2 * n))
        assert [i for _, i in events_in(merged)] == items[max(0, 2 * n - budget) :]
        # the timeline holds the positives only; the older dislikes go to the segment, under its budget
        timeline = PromptConfig(variant="neg_timeline", max_timeline_events=n, max_neg_items=budget)
        p = build_prompt(items, feedback, sid_of, timeline)
        assert segment(p, NEG_OPEN, NEG_CLOSE) == dis[max(0, n - budget) :]
        assert [i for _, i in events_in(p)] == pos


def test_an_unknown_layout_is_refused_not_rendered_as_neg_only() -> None:
    """build_prompt branched on merged and segmented and rendered any other name as neg_only, so a layout added to the
    config without a renderer trained on the neg_only prompt; the layouts are now one list (the config's type) that the
    renderers and the prompts ablation are checked against, and a name with no renderer is an error."""
    from typing import get_args

    from conrec.ablation import PROMPT_VARIANTS as ABLATED
    from conrec.llm.config import PROMPT_VARIANTS

    bullets = PromptConfig.model_construct(**{**PromptConfig().model_dump(), "variant": "bullets"})
    with pytest.raises(ValueError, match="no prompt layout 'bullets'"):
        build_prompt(ITEMS, FEEDBACK, sid_of, bullets)
    from conrec.llm.inference.prompts import LAYOUTS

    declared = get_args(PromptConfig.model_fields["variant"].annotation)
    assert set(LAYOUTS) == set(PROMPT_VARIANTS) == set(ABLATED) == set(declared)
