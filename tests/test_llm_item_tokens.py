"""Hybrid ID + SID prompts (``sft.prompt.item_id_tokens``): one item token after each history SID."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from conrec.errors import StageInputError
from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.predict import Predictor
from conrec.llm.inference.prompts import DISLIKE_TAG, build_prompt
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.toy import toy_tables
from conrec.llm.model.vocab import add_sid_vocabulary, has_item_tokens, item_token_flags
from conrec.llm.training.sft import drop_labels
from conrec.llm.training.timeline import UserTimeline, timeline_examples
from conrec.sid.tokens import item_token, item_token_of_sid, parse_sid

HYBRID = PromptConfig(variant="neg_timeline", max_timeline_events=4, max_neg_items=3, item_id_tokens=True)


@pytest.fixture(scope="module")
def built():
    items, _, sid_map = toy_tables(n_items=30, codebook_sizes=(4, 4, 4))
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=2)))
    n_before = len(tok)
    add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"], items["title"])), item_tokens=True)
    return model, tok, sid_map, n_before


def test_item_token_is_named_by_the_sid_and_is_never_an_sid():
    assert item_token([12, 7, 200]) == "<item_12_7_200>"
    assert item_token_of_sid("<a_12><b_7><c_200>") == "<item_12_7_200>"
    assert parse_sid("<item_12_7_200>") is None
    assert parse_sid("<a_12><b_7><c_200><item_12_7_200>") is None
    with pytest.raises(ValueError, match="not a well-formed SID"):
        item_token_of_sid("<a_1><c_2>")


def test_history_items_carry_their_item_token_and_the_prompt_still_ends_in_the_dislike_tag(built):
    _, _, sid_map, _ = built
    items = list(sid_map.items[:6])
    fb = [-1, 1, -1, 1, 1, -1]
    plain = build_prompt(items, fb, sid_map.sid_of, HYBRID.model_copy(update={"item_id_tokens": False}))
    hybrid = build_prompt(items, fb, sid_map.sid_of, HYBRID)
    assert hybrid.endswith(DISLIKE_TAG)
    shown = [i for i in items if sid_map.sid_of(i) in plain]
    assert len(shown) == 5  # the window of 4 events and one older dislike in the segment
    for item in shown:  # every history item shown is its SID followed by its own token
        sid = sid_map.sid_of(item)
        assert hybrid.count(sid + item_token_of_sid(sid)) == plain.count(sid) == 1
    assert hybrid.replace("<item_", "").count("<") == plain.count("<")  # nothing else changes


def test_timeline_windows_write_item_tokens_in_prompt_and_completion(built):
    _, _, sid_map, _ = built
    tl = UserTimeline("u", list(sid_map.items[:9]), [1, -1] * 4 + [1])
    written = 0
    for ex in timeline_examples([tl], sid_map.sid_of, HYBRID, stride=2):
        for part in (ex["prompt"], ex["completion"]):
            for m in re.finditer(r"(<a_\d+><b_\d+><c_\d+>)(<item_[\d_]+>)?", part):
                assert m.group(2) == item_token_of_sid(m.group(1))
                written += 1
    assert written >= 9 + 8  # each event once as a target, later ones again as context


def test_item_tokens_are_single_tokens_starting_from_their_sid_rows(built):
    model, tok, sid_map, n_before = built
    assert has_item_tokens(tok, sid_map)
    assert len(tok) == n_before + len(sid_map.tokens()) + 8 + len(sid_map)  # SIDs, markers, one per item
    emb = model.get_input_embeddings().weight
    codes = sid_map.codes[5].tolist()
    ids = tok(item_token(codes), add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    sid_rows = emb[tok.convert_tokens_to_ids([f"<{'abc'[lv]}_{c}>" for lv, c in enumerate(codes)])]
    cos = torch.nn.functional.cosine_similarity(emb[ids[0]], sid_rows.mean(0), dim=0)
    assert cos.item() == pytest.approx(1.0, abs=1e-5)
    other = tok.convert_tokens_to_ids(item_token(sid_map.codes[6].tolist()))
    assert not torch.allclose(emb[ids[0]], emb[other])


def test_item_tokens_are_never_training_targets(built):
    _, tok, sid_map, _ = built
    flags = item_token_flags(tok, sid_map, len(tok))
    assert int(flags.sum()) == len(sid_map)
    sid = sid_map.sid_of(sid_map.items[0])
    ids = tok(DISLIKE_TAG + sid + item_token_of_sid(sid), add_special_tokens=False)["input_ids"]
    labels = torch.tensor([[-100, *ids]])
    out = drop_labels(labels, flags)
    assert out[0, :-1].tolist() == labels[0, :-1].tolist() and out[0, -1].item() == -100


def test_search_answers_real_items_and_a_model_is_prompted_the_way_it_was_trained(built):
    model, tok, sid_map, _ = built
    pred = Predictor(model, tok, sid_map, HYBRID, DecodeConfig(num_beams=6, batch_size=2))
    hist = (list(sid_map.items[:5]), [-1, 1, 1, -1, 1])
    recs = pred.recommend([hist], k=5)[0]
    assert len(recs) == 5 and all(i in set(sid_map.items) for i, _ in recs)
    assert np.isfinite([s for _, s in recs]).all()
    with pytest.raises(StageInputError, match="trained with item tokens but sft.prompt.item_id_tokens is False"):
        Predictor(model, tok, sid_map, HYBRID.model_copy(update={"item_id_tokens": False}), DecodeConfig())
    plain_model, plain_tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=2)))
    add_sid_vocabulary(plain_model, plain_tok, sid_map)
    with pytest.raises(StageInputError, match="trained without item tokens"):
        Predictor(plain_model, plain_tok, sid_map, HYBRID, DecodeConfig())
