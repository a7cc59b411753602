"""Exhaustive search: the exact top-K under the model (checked against a brute-force oracle), never
worse than beam search, chunking-independent, exclusions honoured; the Predictor dispatches on decode.search."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from conrec.eval.seen import SEEN_COLUMN
from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.exhaustive import exhaustive_topk
from conrec.llm.inference.predict import Predictor
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import add_sid_vocabulary

from builders import distinct_sid_scores, sparse_sid_map

SIZES = [6, 5, 4]
N_ITEMS = 60
HISTORIES = [(["m1", "m2", "m3"], [-1, 1, -1]), (["m4"], [-1]), ([f"m{j}" for j in range(5, 15)], [1, -1] * 5)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    sid_map = sparse_sid_map(SIZES, N_ITEMS)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=5)))
    distinct_sid_scores(model, add_sid_vocabulary(model, tok, sid_map))  # no ties: a narrow beam really misses items
    # 2 beams: a narrow beam that misses items, so the exhaustive search has something to find
    return Predictor(model, tok, sid_map, PromptConfig(), DecodeConfig(num_beams=2, batch_size=2))


def brute_force(p: Predictor, hist: tuple[list[str], list[int]], k: int) -> list[tuple[str, float]]:
    """Score every non-history item on its own through the (separately tested) slate scorer, sort.

    Each item is a slate of one in a prompt row of its own (the history repeated once per item), so no
    item shares a row's KV cache with another, as when each was scored in a call of its own; the rows go
    through in one batch instead of one call per item (170 forwards, the module's largest cost)."""
    cands = [i for i in p.items if i not in set(hist[0])]
    alone = Predictor(p.model, p.tokenizer, p.sid_map, PromptConfig(), DecodeConfig(num_beams=2, batch_size=len(cands)))
    scores = [row[0] for row in alone.score([hist] * len(cands), [[c] for c in cands])]
    order = sorted(range(len(cands)), key=lambda j: (-scores[j], j))
    return [(cands[j], scores[j]) for j in order[:k]]


def run(p: Predictor, k: int, max_rows: int = 8192) -> list[list[tuple[str, float]]]:
    prompts = [p.prompt(*h) for h in HISTORIES]
    return exhaustive_topk(p.model, p.tokenizer, prompts, p._sid_token_ids, p.vocab.level_ids, p.items, k,
                           exclude=[set(h[0]) for h in HISTORIES], max_rows=max_rows)


def test_exhaustive_equals_the_brute_force_top_k(predictor):
    got = run(predictor, 7)
    for hist, recs in zip(HISTORIES, got):
        want = brute_force(predictor, hist, 7)
        assert [i for i, _ in recs] == [i for i, _ in want]
        np.testing.assert_allclose([s for _, s in recs], [s for _, s in want], atol=1e-4)
        assert not set(i for i, _ in recs) & set(hist[0])  # history excluded


@pytest.mark.parametrize("max_rows", [1, 7, 60, 200])
def test_chunking_does_not_change_results(predictor, max_rows):
    base = run(predictor, 10)
    got = run(predictor, 10, max_rows=max_rows)  # 1 / 7: catalogue in chunks; 60 / 200: whole catalogue per forward
    for a, b in zip(base, got):
        assert [i for i, _ in a] == [i for i, _ in b]
        # float32 sums over other batch shapes: a few ulps of a score of -12.7 is 1e-5 (seen on an AVX-512 Xeon)
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=5e-6, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_never_worse_than_beam_search(predictor, k):
    beam = predictor.recommend(HISTORIES, k)  # max(k, 2) beams
    exact = run(predictor, k)
    for b, e in zip(beam, exact):
        # the exact list's j-th score bounds the beam's j-th score (both sorted, same model scores)
        for (_, sb), (_, se) in zip(b, e):
            assert se >= sb - 1e-5


def test_one_beam_and_k_1_is_a_valid_beam_search(predictor):
    # regression: one beam made transformers run greedy search, which returns no sequence scores
    one = Predictor(predictor.model, predictor.tokenizer, predictor.sid_map, PromptConfig(), DecodeConfig(num_beams=1))
    recs = one.recommend(HISTORIES, 1)
    exact = run(predictor, 1)
    assert [len(r) for r in recs] == [1, 1, 1]
    for b, e in zip(recs, exact):
        assert e[0][1] >= b[0][1] - 1e-5


def test_fewer_items_than_k_when_the_history_covers_the_catalogue(predictor):
    prompts = [predictor.prompt(["m0"], [-1])]
    recs = exhaustive_topk(predictor.model, predictor.tokenizer, prompts, predictor._sid_token_ids, predictor.vocab.level_ids,
                           predictor.items, 20, exclude=[set(predictor.items[3:])])
    assert sorted(i for i, _ in recs[0]) == ["m0", "m1", "m2"]


def test_predictor_dispatches_on_decode_search(predictor):
    exact = Predictor(predictor.model, predictor.tokenizer, predictor.sid_map, PromptConfig(), DecodeConfig(search="exhaustive", batch_size=2))
    recs = exact.recommend(HISTORIES, 7)
    assert [[i for i, _ in r] for r in recs] == [[i for i, _ in r] for r in run(predictor, 7)]
    assert exact.last_stats["n_invalid"] == 0 and exact.last_stats["invalid_per_prompt"] == [0, 0, 0]


def test_bad_arguments_are_clear_errors(predictor):
    with pytest.raises(ValueError, match="k must be"):
        run(predictor, 0)
    with pytest.raises(ValueError, match="max_rows"):
        run(predictor, 3, max_rows=0)


def test_predict_samples_excludes_every_item_the_eval_stage_marks_as_seen(predictor):
    """The eval stage attaches each point's items rated before t (beyond the history window the prompt reads): the LM
    never returns them; without the column (`conrec predict`, serving) it excludes the history it is given."""
    samples = pl.DataFrame({"sample_id": [0], "hist_items": [["m1"]], "hist_feedback": [[-1]]},
                           schema={"sample_id": pl.Int64, "hist_items": pl.List(pl.String), "hist_feedback": pl.List(pl.Int8)})
    top = predictor.predict_samples(samples, 5)["items"][0].to_list()
    assert "m1" not in top
    seen = samples.with_columns(pl.Series(SEEN_COLUMN, [["m1", top[0], top[2]]], dtype=pl.List(pl.String)))
    again = predictor.predict_samples(seen, 5)["items"][0].to_list()
    assert not {top[0], top[2], "m1"} & set(again) and len(again) == 5


@pytest.mark.parametrize("search", ["beam", "exhaustive"])
def test_a_requests_exclude_applies_with_exclude_history_off(predictor, search):
    """Found by review: under ``decode.exclude_history: false`` the LM dropped a request's ``exclude`` without a word
    (even "exclude the whole catalogue" returned k items) while the popular predictor honoured it. An ``exclude`` list
    is an explicit request: it always applies; the flag keeps only the history's own items eligible."""
    from conrec.serve.popular import PopularDislikePredictor

    p = Predictor(predictor.model, predictor.tokenizer, predictor.sid_map, PromptConfig(),
                  DecodeConfig(search=search, num_beams=12, batch_size=2, exclude_history=False))
    hist = HISTORIES[0]
    plain = [i for i, _ in p.recommend([hist], 12)[0]]
    excluded = plain[:3]
    got = [i for i, _ in p.recommend([hist], 5, exclude=[excluded])[0]]
    assert len(got) == 5 and not set(got) & set(excluded)
    if search == "exhaustive":  # the exact ranking less the excluded items: the history's own stay eligible
        assert got == [i for i in plain if i not in excluded][:5]
    assert p.recommend([hist], 5, exclude=[list(p.items)]) == [[]]  # nothing left: an empty answer, no error
    popular = PopularDislikePredictor(None, list(p.items))
    assert not set(i for i, _ in popular.recommend([hist], 5, exclude=[excluded])[0]) & set(excluded)  # the two agree
    # the eval's seen items still follow the flag (off: the LM may rank them, as the eval's note says)
    samples = pl.DataFrame({"sample_id": [0], "hist_items": [hist[0]], "hist_feedback": [hist[1]], SEEN_COLUMN: [excluded]},
                           schema={"sample_id": pl.Int64, "hist_items": pl.List(pl.String), "hist_feedback": pl.List(pl.Int8),
                                   SEEN_COLUMN: pl.List(pl.String)})
    assert p.predict_samples(samples, 12)["items"][0].to_list() == plain
