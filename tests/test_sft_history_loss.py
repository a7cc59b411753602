"""The SFT sequence loss on the prompt's negative segment (sft.train.history_loss), checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from conrec.llm.training.sft import negative_segment_loss

# tokens 0-2 text; 10 = <neg>, 11 = </neg>; level 0: 3, 4; level 1: 5, 6; level 2: 7, 8, 9
LEVELS = torch.tensor([-1, -1, -1, 0, 0, 1, 1, 2, 2, 2, -1, -1])
NEG = (10, 11)


def _inputs(ids: list[int], supervised: int = 0):
    t = torch.tensor([ids])
    labels = torch.full_like(t, -100)
    if supervised:
        labels[0, -supervised:] = t[0, -supervised:]
    return t, labels


def test_zero_hidden_state_gives_the_uniform_loss_of_each_level():
    # <neg> (3,5,7) </neg> (4,6,8) <- the second item is outside the segment, the completion (last 3) too
    ids, labels = _inputs([0, 10, 3, 5, 7, 11, 4, 6, 8], supervised=3)
    hidden = torch.zeros(1, ids.shape[1], 4)
    head = torch.randn(12, 4)
    got = negative_segment_loss(hidden, ids, labels, head, LEVELS, NEG)
    # zero states -> uniform softmax within each level: targets 3 (2 codes), 5 (2 codes), 7 (3 codes)
    assert float(got) == pytest.approx((math.log(2) + math.log(2) + math.log(3)) / 3, abs=1e-6)


def test_each_target_is_predicted_from_the_previous_position_within_its_level():
    ids, labels = _inputs([0, 10, 4, 6, 11, 1])
    hidden = torch.zeros(1, 6, 3)
    head = torch.zeros(12, 3)
    head[4, 0] = 5.0  # code 4 (level 0) scores 5 * hidden[..., 0]
    hidden[0, 1, 0] = 1.0  # the state at <neg> predicts token 4: logits (3: 0, 4: 5) over level 0
    got = negative_segment_loss(hidden, ids, labels, head, LEVELS, NEG)
    level0 = -torch.log_softmax(torch.tensor([0.0, 5.0]), 0)[1]
    assert float(got) == pytest.approx((float(level0) + math.log(2)) / 2, abs=1e-6)  # token 6: uniform over (5, 6)


def test_no_negative_segment_means_no_loss_and_completion_tokens_are_skipped():
    ids, labels = _inputs([0, 1, 3, 5, 7], supervised=3)  # an alignment example: no <neg>
    hidden = torch.randn(1, 5, 4, requires_grad=True)
    assert float(negative_segment_loss(hidden, ids, labels, torch.randn(12, 4), LEVELS, NEG)) == 0.0
    ids, labels = _inputs([0, 10, 3, 5, 7], supervised=3)  # segment never closed, but its tokens are supervised
    assert float(negative_segment_loss(torch.zeros(1, 5, 4), ids, labels, torch.randn(12, 4), LEVELS, NEG)) == 0.0


def test_gradient_reaches_hidden_states_and_head():
    ids, labels = _inputs([0, 10, 3, 5, 7, 11])
    hidden = torch.randn(1, 6, 4, requires_grad=True)
    head = torch.randn(12, 4, requires_grad=True)
    negative_segment_loss(hidden, ids, labels, head, LEVELS, NEG).backward()
    assert hidden.grad is not None and hidden.grad[0, 1:4].abs().sum() > 0 and hidden.grad[0, 4:].abs().sum() == 0
    assert head.grad is not None and head.grad[3:10].abs().sum() > 0 and head.grad[:3].abs().sum() == 0


def test_completion_loss_adds_the_weighted_segment_loss_of_a_real_model():
    import itertools

    import numpy as np

    from conrec.llm.config import ModelConfig, PromptConfig, TinyModelConfig
    from conrec.llm.inference.prompts import NEG_CLOSE, NEG_OPEN, build_prompt
    from conrec.llm.model.backbone import load_backbone
    from conrec.llm.model.vocab import add_sid_vocabulary
    from conrec.llm.training.sft import completion_loss, left_align, marker_id
    from conrec.sid.sid_map import SidMap

    codes = np.array(list(itertools.product(range(3), range(3), range(2))))[:12]
    sid_map = SidMap([f"m{j}" for j in range(12)], codes, [3, 3, 2])
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=2)))
    vocab = add_sid_vocabulary(model, tok, sid_map)
    prompt = build_prompt(["m1", "m2", "m5", "m7"], [-1, 1, -1, -1], sid_map.sid_of, PromptConfig())
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(sid_map.sid_of("m9"), add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + c_ids])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([[-100] * len(p_ids) + c_ids])}
    span = (marker_id(tok, NEG_OPEN), marker_id(tok, NEG_CLOSE))
    with torch.no_grad():
        base, _ = completion_loss(model, batch, token_level=vocab.token_level)
        both, _ = completion_loss(model, batch, token_level=vocab.token_level, history_loss=0.5, neg_span=span)
        inputs, labels, _ = left_align(batch)
        hidden = model(**inputs, output_hidden_states=True).hidden_states[-1]
        seg = negative_segment_loss(hidden, inputs["input_ids"], labels, model.get_output_embeddings().weight, vocab.token_level, span)
    assert float(seg) > 0  # three disliked items = 9 SID targets in the segment
    assert float(both) == pytest.approx(float(base) + 0.5 * float(seg), rel=1e-5)
    with pytest.raises(ValueError, match="single token"):
        marker_id(tok, "not a marker at all")
