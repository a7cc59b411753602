"""Slate scoring: LM scores equal the model's own summed SID log-probabilities, order-free, batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conrec.errors import DataValidationError
from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.constrained import generate_topk
from conrec.llm.inference.predict import Predictor
from conrec.llm.inference.prompt_ids import prompt_token_ids
from conrec.llm.inference.scoring import sid_log_probs
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import add_sid_vocabulary

from builders import distinct_sid_scores, sparse_sid_map, with_bos

SIZES = [5, 4, 3]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=3)))
    distinct_sid_scores(model, add_sid_vocabulary(model, tok, sid_map))  # no ties: scores that differ per item and history
    return Predictor(model, tok, sid_map, PromptConfig(), DecodeConfig(num_beams=10, batch_size=2))


HISTORIES = [
    (["m1", "m2", "m3"], [-1, 1, -1]),
    (["m4"], [-1]),
    ([f"m{j}" for j in range(5, 15)], [1, -1] * 5),
]


def oracle(p: Predictor, history: tuple[list[str], list[int]], item: str) -> float:
    """A plain full forward of prompt + SID for one candidate: the sum of its SID tokens' log-probs,
    each normalised over its level's codes (the model's item score, as decoding defines it)."""
    prompt_ids = torch.tensor(prompt_token_ids(p.tokenizer, [p.prompt(*history)])[0])  # as inference encodes it
    sid_ids = p.tokenizer(p.sid_map.sid_of(item), add_special_tokens=False)["input_ids"]
    assert len(sid_ids) == p.sid_map.levels  # one token per SID level
    ids = torch.cat([prompt_ids, torch.tensor(sid_ids)]).unsqueeze(0)
    with torch.no_grad():
        logits = p.model(input_ids=ids).logits[0].float()
    n = len(prompt_ids)
    total = 0.0
    for j, t in enumerate(sid_ids):
        level = p.vocab.level_ids[j]
        logp = torch.log_softmax(logits[n - 1 + j, level], -1)
        total += float(logp[(level == t).nonzero().item()])
    return total


def test_scores_equal_the_models_own_summed_token_log_probs(predictor):
    slates = [["m0", "m7", "m24", "m3"], ["m9"], [f"m{j}" for j in range(20)]]  # uneven slate sizes, batch of 2 + 1
    got = predictor.score(HISTORIES, slates)
    for hist, slate, scores in zip(HISTORIES, slates, got):
        assert len(scores) == len(slate)
        want = [oracle(predictor, hist, item) for item in slate]
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
        assert all(s < 0 for s in scores)


def test_scores_equal_the_oracle_for_a_bos_adding_tokenizer(predictor):
    """Review: the oracle encoded the prompt without the special prefix inference gives it, so it could not stand
    for inference with a BOS-adding tokenizer (Llama-3, Gemma, Mistral); through prompt_token_ids it does."""
    bos = Predictor(predictor.model, with_bos(predictor.tokenizer), predictor.sid_map, PromptConfig(), DecodeConfig(num_beams=10, batch_size=2))
    slate = ["m0", "m7", "m24"]
    got = bos.score(HISTORIES[:1], [slate])[0]
    np.testing.assert_allclose(got, [oracle(bos, HISTORIES[0], item) for item in slate], rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, predictor.score(HISTORIES[:1], [slate])[0], atol=1e-4)  # the BOS changes the scores


def test_candidate_order_and_slate_company_do_not_change_scores(predictor):
    slate = [f"m{j}" for j in range(0, 25, 2)]
    base = dict(zip(slate, predictor.score([HISTORIES[2]], [slate])[0]))
    perm = list(np.random.default_rng(1).permutation(slate))
    shuffled = dict(zip(perm, predictor.score([HISTORIES[2]], [perm])[0]))
    alone = {i: predictor.score([HISTORIES[2]], [[i]])[0][0] for i in slate[:3]}
    for item in slate:
        assert shuffled[item] == pytest.approx(base[item], abs=1e-5)
    for item, s in alone.items():
        assert s == pytest.approx(base[item], abs=1e-5)


def test_scores_match_beam_search_scores_of_the_same_items(predictor):
    recs = generate_topk(
        predictor.model, predictor.tokenizer, [predictor.prompt(*HISTORIES[0])], predictor.trie, predictor.items, 5,
        DecodeConfig(num_beams=10, exclude_history=False), vocab=predictor.vocab,
    )[0]
    scores = predictor.score([HISTORIES[0]], [[i for i, _ in recs]])[0]
    np.testing.assert_allclose(scores, [s for _, s in recs], atol=1e-4)


def test_one_forward_over_all_candidates_after_one_prompt_encoding(predictor, monkeypatch):
    calls: list[tuple[int, int]] = []
    decoder = predictor.model.get_decoder()
    original = decoder.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        calls.append(tuple(ids.shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", spy)
    predictor.score([HISTORIES[0]], [[f"m{j}" for j in range(20)]])
    assert len(calls) == 2  # the prompt once, then every candidate at once
    # the candidates' first L-1 SID tokens in the prompt's own row (tree attention): no per-candidate copy
    assert calls[0][0] == 1 and calls[1] == (1, 20 * (len(SIZES) - 1))


def test_copied_cache_path_gives_the_same_scores(predictor, monkeypatch):
    """Models that cannot take a custom 4D mask repeat the prompt cache per candidate instead: same
    scores; and so does the tree path in chunks of candidates (the prompt cache cropped back each time)."""
    from conrec.llm.inference import scoring

    slates = [["m0", "m7", "m24", "m3"], ["m9"], [f"m{j}" for j in range(20)]]
    tree = predictor.score(HISTORIES, slates)
    monkeypatch.setattr(scoring, "_TREE_CHUNK", 3)
    chunked = predictor.score(HISTORIES, slates)
    for a, b in zip(tree, chunked):
        np.testing.assert_allclose(a, b, rtol=5e-6, atol=1e-5)
    monkeypatch.setattr(scoring, "tree_attention_ok", lambda model: False)
    copied = predictor.score(HISTORIES, slates)
    for a, b in zip(tree, copied):
        np.testing.assert_allclose(a, b, rtol=5e-6, atol=1e-5)


def test_plain_lm_head_path_gives_the_same_scores(predictor, monkeypatch):
    """Models whose logits are not head(decoder) take the plain path: full logits for every row."""
    from conrec.llm.inference import sid_head

    slates = [[f"m{j}" for j in range(0, 25, 3)]]
    shared = predictor.score([HISTORIES[2]], slates)[0]
    monkeypatch.setattr(sid_head, "decoder_and_head", lambda model: None)
    plain = predictor.score([HISTORIES[2]], slates)[0]
    np.testing.assert_allclose(plain, shared, rtol=5e-6, atol=1e-5)


def test_sid_log_probs_rejects_malformed_slates(predictor):
    p = predictor
    with pytest.raises(ValueError, match="candidate slates"):
        sid_log_probs(p.model, p.tokenizer, ["a"], [], p.vocab.level_ids)
    with pytest.raises(ValueError, match="common L"):
        sid_log_probs(p.model, p.tokenizer, ["a", "b"], [torch.zeros((2, 3), dtype=torch.long), torch.zeros((2, 2), dtype=torch.long)], p.vocab.level_ids)


@pytest.mark.parametrize(
    "slates, needle",
    [
        ([[]], "empty"),
        ([["m1", "m1"]], "repeats"),
        ([["m1", "nope"]], "unknown item id"),
        ([["m1"], ["m2"]], "one per history"),
    ],
)
def test_bad_slates_are_named(predictor, slates, needle):
    with pytest.raises(DataValidationError, match=needle):
        predictor.score([HISTORIES[0]], slates)


def test_eval_slates_of_an_empty_history_point_are_scored_as_it_is_decoded(predictor):
    """Found by probing: with data.split.min_history: 0 an evaluation point can have an empty history; top-K decoding
    took it, but the exposure-controlled evaluation scored slates through Predictor.score, which refuses an empty
    history ("history #2 is empty"), so the whole eval stage stopped. A user's own history must still not be empty."""
    import polars as pl

    from conrec.eval.candidates import lm_scorer

    samples = pl.DataFrame(
        {"sample_id": [7, 8], "hist_items": [HISTORIES[0][0], []], "hist_feedback": [HISTORIES[0][1], []]},
        schema={"sample_id": pl.Int64, "hist_items": pl.List(pl.String), "hist_feedback": pl.List(pl.Int64)},
    )
    sets = [["m0", "m7", "m24"], ["m9", "m3"]]
    got = lm_scorer(predictor)(samples, sets)
    np.testing.assert_allclose(got[0], predictor.score([HISTORIES[0]], [sets[0]])[0], atol=1e-4)
    np.testing.assert_allclose(got[1], predictor.score_prompts([predictor.prompt([], [])], [sets[1]])[0], atol=1e-4)
    assert predictor.predict_samples(samples, 2)["items"].to_list()[1]  # the same point decodes
    with pytest.raises(DataValidationError, match=r"history #0 is empty: give at least one disliked or liked item"):
        predictor.score([([], [])], [sets[1]])
