"""decode.popularity_prior: one item-level prior, split exactly over the SID levels, in every search."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from conrec.errors import ConfigError
from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.item_prior import TriePrior, dislike_log_prior
from conrec.llm.inference.predict import Predictor
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import add_sid_vocabulary

from builders import distinct_sid_scores, sparse_sid_map

SIZES = [5, 4, 3]
ITEMS = [f"m{j}" for j in range(25)]
HISTORIES = [(["m1", "m2", "m3"], [-1, 1, -1]), (["m4"], [-1]), ([f"m{j}" for j in range(5, 15)], [1, -1] * 5)]


@pytest.fixture(scope="module")
def parts():
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=4)))
    distinct_sid_scores(model, add_sid_vocabulary(model, tok, sid_map), scale=1.0)  # no two items tie
    # a skewed dislike log with distinct counts: item j disliked (7 j mod 25) times, m0 never
    events = pl.DataFrame(
        {"item_id": [f"m{j}" for j in range(25) for _ in range(7 * j % 25)], "feedback": -1}
    ).vstack(pl.DataFrame({"item_id": ["m0"] * 50, "feedback": 1}))  # positives never count
    return model, tok, sid_map, events


def test_dislike_log_prior_is_the_smoothed_dislike_share():
    events = pl.DataFrame({"item_id": ["a", "a", "b", "c", "c"], "feedback": [-1, -1, -1, 1, 1]})
    prior = dislike_log_prior(events, ["a", "b", "c", "d"], smoothing=1.0)
    np.testing.assert_allclose(prior.exp().numpy(), np.array([3, 2, 1, 1]) / 7)
    assert torch.isfinite(prior).all()
    with pytest.raises(ValueError, match="smoothing"):
        dislike_log_prior(events, ["a"], smoothing=0.0)


def test_level_increments_sum_to_the_item_prior(parts):
    _, _, sid_map, events = parts
    trie = sid_map.trie()
    log_prior = dislike_log_prior(events, sid_map.items)
    tp = TriePrior(trie, log_prior, weight=0.7)
    codes = torch.as_tensor(sid_map.codes)
    total = torch.zeros(len(ITEMS))
    for level in range(len(SIZES)):
        inc = tp.increments(codes[:, :level])
        total += inc.gather(1, codes[:, level : level + 1]).squeeze(1)
    torch.testing.assert_close(total, (0.7 * log_prior).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(tp.item_bonus(torch.arange(len(ITEMS))), (0.7 * log_prior).float())


def _predictor(parts, weight: float, **decode) -> Predictor:
    model, tok, sid_map, events = parts
    cfg = DecodeConfig(popularity_prior=weight, batch_size=2, **decode)
    return Predictor(model, tok, sid_map, PromptConfig(), cfg, dislike_log_prior(events, sid_map.items))


def test_beam_exhaustive_and_slate_scores_all_add_the_same_prior(parts):
    plain, weighted = _predictor(parts, 0.0, num_beams=25), _predictor(parts, 1.5, num_beams=25)
    exhaustive = _predictor(parts, 1.5, search="exhaustive")
    _, _, sid_map, events = parts
    bonus = dict(zip(sid_map.items, (1.5 * dislike_log_prior(events, sid_map.items)).tolist()))
    k = 8
    base = {i: s for i, s in plain.recommend(HISTORIES, 25)[0]}
    beam = weighted.recommend(HISTORIES, k)
    exact = exhaustive.recommend(HISTORIES, k)
    # beam search over the whole catalogue is exact: the same items and scores as the exhaustive search
    assert [[i for i, _ in r] for r in beam] == [[i for i, _ in r] for r in exact]
    for r_beam, r_exact in zip(beam, exact):
        np.testing.assert_allclose([s for _, s in r_beam], [s for _, s in r_exact], atol=1e-4)
    # each score is the LM's log-probability plus w x log prior
    for item, score in beam[0]:
        assert score == pytest.approx(base[item] + bonus[item], abs=1e-4)
    # and slate scoring gives the same number for the same item
    slate = [i for i, _ in beam[0]]
    np.testing.assert_allclose(weighted.score(HISTORIES[:1], [slate])[0], [s for _, s in beam[0]], atol=1e-4)
    # the prior changes the ranking (the test would pass vacuously otherwise)
    assert [i for i, _ in beam[0]] != sorted(base, key=lambda i: -base[i])[:k]


def test_a_prior_weight_without_a_prior_is_a_clear_error(parts):
    model, tok, sid_map, _ = parts
    with pytest.raises(ConfigError, match="popularity_prior"):
        Predictor(model, tok, sid_map, PromptConfig(), DecodeConfig(popularity_prior=1.0))


@pytest.mark.parametrize("bad", [-0.5, math.inf, math.nan])
def test_the_weight_must_be_finite_and_non_negative(bad):
    with pytest.raises(ValueError):
        DecodeConfig(popularity_prior=bad)
