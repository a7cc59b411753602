"""Constrained decoding with a tiny random model: only real items, K distinct, history excluded."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.constrained import (
    SidLogitsProcessor,
    beam_generation_config,
    generate_topk,
    sample_distinct,
)
from conrec.llm.inference.prompt_ids import encode_prompts, prompt_token_ids
from conrec.llm.inference.prompts import build_prompt
from conrec.llm.inference.sid_beam import sid_beam_search
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import add_sid_vocabulary
from conrec.sid.sid_map import SidMap

from builders import distinct_sid_scores, sparse_sid_map

SIZES = [5, 4, 3]


@pytest.fixture(scope="module")
def setup():
    # a sparse catalogue: 25 of the 60 possible code tuples, so unconstrained output would often be invalid
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=2)))
    vocab = add_sid_vocabulary(model, tok, sid_map)
    distinct_sid_scores(model, vocab)  # no ties: rankings that a wrong cache, mask or position would change
    model.eval()
    sid_of = sid_map.sid_lookup()
    histories = [
        (["m1", "m2", "m3"], [-1, 1, -1]),
        (["m4"], [-1]),
        ([f"m{j}" for j in range(5, 15)], [1, -1] * 5),
    ]
    prompts = [build_prompt(h, f, sid_of, PromptConfig()) for h, f in histories]
    return model, tok, sid_map, vocab, histories, prompts


def test_processor_allows_exactly_the_trie_children(setup):
    model, tok, sid_map, vocab, _, prompts = setup
    enc = encode_prompts(tok, prompts[:2], model.device)
    prompt_len = enc["input_ids"].shape[1]
    trie = sid_map.trie()
    codes = sid_map.codes
    for prompt_len_arg in (prompt_len, None):  # explicit prompt length, or found from the SID suffix
        proc = SidLogitsProcessor(trie, vocab, tok.eos_token_id, prompt_len=prompt_len_arg)
        for level in range(len(SIZES) + 1):
            prefix = torch.tensor(codes[[0, 7], :level]) if level <= len(SIZES) else None
            gen = torch.stack([vocab.level_ids[lv][prefix[:, lv]] for lv in range(level)], 1) if level else torch.zeros((2, 0), dtype=torch.long)
            ids = torch.cat([enc["input_ids"], gen], 1)
            scores = torch.randn(2, model.get_input_embeddings().weight.shape[0])
            out = proc(ids, scores)
            for row, item_row in enumerate([0, 7]):
                finite = set(torch.isfinite(out[row]).nonzero().flatten().tolist())
                if level == len(SIZES):
                    assert finite == {tok.eos_token_id}
                    continue
                same = (codes[:, :level] == codes[item_row, :level]).all(1)
                want = {vocab.level_ids[level][c].item() for c in np.unique(codes[same, level])}
                assert finite == want
                # scores are renormalised over the level's codes, then masked to the trie children
                level_lse = torch.logsumexp(scores[row, vocab.level_ids[level]], 0)
                assert torch.allclose(out[row, list(want)], scores[row, list(want)] - level_lse)


def test_topk_are_real_distinct_items_with_no_invalid(setup):
    model, tok, sid_map, vocab, histories, prompts = setup
    stats: dict = {}
    k = 10
    recs = generate_topk(model, tok, prompts, sid_map.trie(), sid_map.items, k, DecodeConfig(num_beams=10, batch_size=2, exclude_history=False), vocab=vocab, stats=stats)
    assert len(recs) == len(prompts)
    for r in recs:
        items = [i for i, _ in r]
        assert len(items) == k and len(set(items)) == k
        assert set(items) <= set(sid_map.items)
        scores = [s for _, s in r]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
    assert stats["n_invalid"] == 0 and stats["invalid_per_prompt"] == [0, 0, 0]


def test_scores_are_the_model_log_probabilities(setup):
    model, tok, sid_map, vocab, _, prompts = setup
    (best, score), *_ = generate_topk(model, tok, prompts[:1], sid_map.trie(), sid_map.items, 3, DecodeConfig(num_beams=5), vocab=vocab)[0]
    ids = prompt_and_sid_ids(tok, prompts[0], sid_map.sid_of(best))
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    assert score == pytest.approx(_sid_logprob(logits, ids[0], vocab), abs=1e-3)


def prompt_and_sid_ids(tok, prompt: str, sid: str) -> torch.Tensor:
    """(1, n) ids of the prompt as inference encodes it (:func:`prompt_token_ids`: a BOS-adding tokenizer's prefix
    included) followed by the SID's tokens."""
    return torch.tensor([prompt_token_ids(tok, [prompt])[0] + tok(sid, add_special_tokens=False)["input_ids"]])


def _sid_logprob(logits: torch.Tensor, ids: torch.Tensor, vocab) -> float:
    """Oracle: sum over the trailing SID tokens of log-softmax over *that level's* codes.

    ``logits[t]`` predicts ``ids[t + 1]``; the last ``levels`` tokens of ``ids`` are the SID."""
    total = 0.0
    levels = len(vocab.level_ids)
    for level in range(levels):
        pos = len(ids) - levels + level
        level_ids = vocab.level_ids[level]
        logp = torch.log_softmax(logits[pos - 1, level_ids].float(), -1)
        total += logp[(level_ids == ids[pos]).nonzero().item()].item()
    return total


def test_history_is_excluded_and_k_still_met(setup):
    model, tok, sid_map, vocab, histories, prompts = setup
    excl = [set(h) for h, _ in histories]
    k = 12
    recs = generate_topk(model, tok, prompts, sid_map.trie(), sid_map.items, k, DecodeConfig(num_beams=4, exclude_history=True), exclude=excl, vocab=vocab)
    for r, ex in zip(recs, excl):
        items = [i for i, _ in r]
        assert not set(items) & ex
        assert len(items) == k and len(set(items)) == k


def test_k_larger_than_catalogue_returns_every_item_once(setup):
    model, tok, sid_map, vocab, _, prompts = setup
    recs = generate_topk(model, tok, prompts[:1], sid_map.trie(), sid_map.items, 40, DecodeConfig(num_beams=40), vocab=vocab)
    assert sorted(i for i, _ in recs[0]) == sorted(sid_map.items)


def test_sample_distinct_gives_n_distinct_real_items(setup):
    model, tok, sid_map, vocab, _, prompts = setup
    enc = encode_prompts(tok, prompts, model.device)
    torch.manual_seed(0)
    ids, rows = sample_distinct(model, tok, enc["input_ids"], sid_map.trie(), 8, attention_mask=enc["attention_mask"], vocab=vocab)
    assert rows.shape == (3, 8) and ids.shape == (3, 8, len(SIZES))
    for b in range(3):
        r = rows[b].tolist()
        assert min(r) >= 0 and len(set(r)) == 8
        for j, row in enumerate(r):
            assert tok.decode(ids[b, j]) == sid_map.sid_of(sid_map.items[row])


def test_sample_distinct_tops_up_repeated_draws_with_the_best_undrawn_items(setup, monkeypatch):
    from conrec.llm.inference import constrained

    model, tok, sid_map, vocab, _, prompts = setup
    enc = encode_prompts(tok, prompts, model.device)
    trie = sid_map.trie()
    calls = []

    def recorded(*args, **kwargs):
        out = constrained_search(*args, **kwargs)
        calls.append((kwargs["excluded"].clone(), out[0].clone()))
        return out

    constrained_search = constrained.sid_beam_search
    monkeypatch.setattr(constrained, "sid_beam_search", recorded)
    torch.manual_seed(0)
    # 24 of 25 items from 48 draws: some prompt's draws repeat, so the top-up must fill the rest
    ids, rows = sample_distinct(model, tok, enc["input_ids"], trie, 24, attention_mask=enc["attention_mask"], vocab=vocab)
    assert len(calls) == 1
    excluded, best = calls[0]
    topped = 0
    for b in range(3):
        r = rows[b].tolist()
        assert min(r) >= 0 and len(set(r)) == 24
        for j, row in enumerate(r):
            assert tok.decode(ids[b, j]) == sid_map.sid_of(sid_map.items[row])
    b = -1
    for s, row in enumerate(excluded):  # each short prompt, in prompt order: its draws excluded, then the best others
        drawn = row.nonzero().flatten().tolist()
        b = next(j for j in range(b + 1, 3) if set(rows[j, : len(drawn)].tolist()) == set(drawn))  # two may draw alike
        assert rows[b, len(drawn) :].tolist() == [x for x in best[s].tolist() if x >= 0][: 24 - len(drawn)]
        topped += 24 - len(drawn)
    assert topped > 0


def _exact_item_logprobs(model, tok, prompt: str, sid_map: SidMap, vocab) -> dict[str, float]:
    """Oracle: log p(SID of item | prompt) for every item, one unbatched, uncached forward each."""
    out = {}
    for item in sid_map.items:
        ids = prompt_and_sid_ids(tok, prompt, sid_map.sid_of(item))
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        out[item] = _sid_logprob(logits, ids[0], vocab)
    return out


def test_batched_left_padded_search_with_shared_cache_matches_the_exhaustive_ranking(setup):
    # prompts of different lengths in one batch: the shared prompt cache must use the same positions
    # as an unpadded forward, and with num_beams = catalogue size the search is exhaustive
    model, tok, sid_map, vocab, histories, prompts = setup
    # fresh SID embeddings are all alike (every item would tie): give the SID rows random values
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    sid_ids = torch.cat([ids for ids in vocab.level_ids])
    with torch.no_grad():
        for emb in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            emb[sid_ids] += torch.randn(len(sid_ids), emb.shape[1], generator=gen)
    excl = [set(h) for h, _ in histories]
    recs = generate_topk(
        model, tok, prompts, sid_map.trie(), sid_map.items, 8, DecodeConfig(num_beams=25, batch_size=3, exclude_history=True),
        exclude=excl, vocab=vocab,
    )
    for prompt, ex, r in zip(prompts, excl, recs):
        exact = _exact_item_logprobs(model, tok, prompt, sid_map, vocab)
        want = sorted((i for i in exact if i not in ex), key=lambda i: -exact[i])[:8]
        assert [i for i, _ in r] == want
        for item, score in r:
            assert score == pytest.approx(exact[item], abs=1e-3)


def _hf_beam_search(model, tok, enc, trie, vocab, num_beams, excluded):
    """Reference: Hugging Face ``generate`` beam search over the full vocabulary with the processor."""
    prompt_len = enc["input_ids"].shape[1]
    proc = SidLogitsProcessor(trie, vocab, tok.eos_token_id, prompt_len=prompt_len, excluded=excluded, group_size=num_beams)
    out = model.generate(
        **enc, generation_config=beam_generation_config(tok, trie.levels, num_beams, num_beams), logits_processor=[proc]
    )
    gen = out.sequences[:, prompt_len:]
    rows = trie.item_index(vocab.token_to_code[gen].clamp(min=0)).view(len(enc["input_ids"]), num_beams)
    scores = out.sequences_scores.view(len(enc["input_ids"]), num_beams)
    return torch.where(scores > -1e8, rows, torch.full_like(rows, -1)), scores


@pytest.mark.parametrize("num_beams", [2, 6, 25])
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("tree", [True, False])
def test_sid_only_beam_search_ranks_exactly_as_generate(setup, num_beams, exclude, tree, monkeypatch):
    """The SID-only search (level-code head, one topk per level) returns the items and scores that
    transformers' beam search with the logits processor returns, on a left-padded batch: with the
    beams sharing their prompt's row (tree attention) and with the cache copied per beam."""
    from conrec.llm.inference import sid_beam

    assert sid_beam.tree_attention_ok(setup[0])  # the tiny Llama takes the tree path by default
    if not tree:
        monkeypatch.setattr(sid_beam, "tree_attention_ok", lambda model: False)
    model, tok, sid_map, vocab, histories, prompts = setup
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    sid_ids = torch.cat(list(vocab.level_ids))
    with torch.no_grad():  # distinct SID embeddings, so that no two items tie
        for emb in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            emb[sid_ids] += torch.randn(len(sid_ids), emb.shape[1], generator=gen)
    trie = sid_map.trie()
    excluded = None
    if exclude:
        excluded = torch.zeros(len(prompts), len(trie), dtype=torch.bool)
        for i, (h, _) in enumerate(histories):
            excluded[i, [sid_map.items.index(x) for x in h]] = True
    enc = encode_prompts(tok, prompts, model.device)
    rows, scores = sid_beam_search(model, enc, trie, vocab, num_beams, num_beams, excluded=excluded)
    want_rows, want_scores = _hf_beam_search(model, tok, enc, trie, vocab, num_beams, excluded)
    valid = want_rows >= 0
    assert torch.equal(rows, want_rows)
    torch.testing.assert_close(scores[valid], want_scores[valid].float(), atol=1e-4, rtol=0)
    assert torch.isinf(scores[~valid]).all()


def test_branches_made_only_of_history_items_are_never_entered(setup):
    # the user has seen every item under the first level-0 code: with K beams = K, a search that only
    # masked the last level would spend beams on that branch and return fewer than K items
    model, tok, sid_map, vocab, _, prompts = setup
    codes = sid_map.codes
    first = codes[0, 0]
    history = {sid_map.items[j] for j in np.flatnonzero(codes[:, 0] == first)}
    history |= {sid_map.items[j] for j in np.flatnonzero(codes[:, 0] == codes[-1, 0])}
    stats: dict = {}
    k = 3
    recs = generate_topk(
        model, tok, prompts[:2], sid_map.trie(), sid_map.items, k, DecodeConfig(num_beams=k, exclude_history=True),
        exclude=[history, history], vocab=vocab, stats=stats,
    )
    for r in recs:
        assert len(r) == k and not {i for i, _ in r} & history
    assert stats["n_invalid"] == 0


def test_trie_counts_excluded_items_under_every_node():
    rng = np.random.default_rng(1)
    combos = np.array(list(itertools.product(*[range(s) for s in SIZES])))
    codes = combos[np.sort(rng.choice(len(combos), size=30, replace=False))]
    trie = SidMap([f"i{j}" for j in range(30)], codes, SIZES).trie()
    excluded = torch.from_numpy(rng.random((2, 30)) < 0.4)
    below = trie.excluded_below(excluded)
    for level in range(1, len(SIZES) + 1):
        for prefix in {tuple(c[:level]) for c in codes}:
            node = trie.node_of(torch.tensor([prefix]))
            under = (codes[:, :level] == prefix).all(1)
            assert trie.items_left(node).item() == under.sum()
            for p in range(2):
                assert below[p, node].item() == (under & excluded[p].numpy()).sum()


def test_each_rows_results_depend_only_on_its_own_exclusions(setup):
    """Regression (issue 13.1): a long-history row once cut every row of its batch to its own few items."""
    model, tok, sid_map, vocab, _, prompts = setup
    k, cfg = 20, DecodeConfig(num_beams=20, batch_size=8, exclude_history=True)
    short, long_ = {"m1"}, set(sid_map.items[1:])  # the long history leaves exactly one item ("m0")
    alone = generate_topk(model, tok, prompts[:1], sid_map.trie(), sid_map.items, k, cfg, exclude=[short], vocab=vocab)[0]
    stats: dict = {}
    both = generate_topk(model, tok, prompts[:2], sid_map.trie(), sid_map.items, k, cfg, exclude=[short, long_], vocab=vocab, stats=stats)
    assert len(alone) == k
    assert [i for i, _ in both[0]] == [i for i, _ in alone]
    assert np.allclose([s for _, s in both[0]], [s for _, s in alone], atol=1e-4)
    assert [i for i, _ in both[1]] == ["m0"]
    assert stats["n_invalid"] == 0 and stats["invalid_per_prompt"] == [0, 0]


def test_history_covering_the_whole_catalogue_gives_nothing_and_no_invalid(setup, caplog):
    model, tok, sid_map, vocab, _, prompts = setup
    cfg = DecodeConfig(num_beams=10, exclude_history=True)
    stats: dict = {}
    with caplog.at_level("WARNING", logger="conrec.llm"):
        recs = generate_topk(
            model, tok, prompts[:2], sid_map.trie(), sid_map.items, 5, cfg, exclude=[set(sid_map.items), {"m3"}], vocab=vocab, stats=stats
        )
    assert recs[0] == [] and len(recs[1]) == 5
    assert stats["n_invalid"] == 0 and stats["n_generated"] == 5
    assert "invalid" not in caplog.text


def test_decode_device_is_explicit():
    import torch

    from conrec.errors import ConfigError
    from conrec.llm.config import DecodeConfig
    from conrec.llm.inference.predict import decode_device

    assert decode_device(DecodeConfig(device="cpu")) == torch.device("cpu")
    auto = decode_device(DecodeConfig())
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no GPU"):
            decode_device(DecodeConfig(device="cuda"))


def test_a_given_item_to_row_map_gives_the_answers_of_the_one_built_per_call(setup):
    """Predictor hands generate_topk its own item -> row map (built once, not per request): same exclusions, same answers."""
    model, tok, sid_map, vocab, histories, prompts = setup
    excl = [set(h) for h, _ in histories]
    cfg = DecodeConfig(num_beams=6, exclude_history=True)
    built = generate_topk(model, tok, prompts, sid_map.trie(), sid_map.items, 5, cfg, exclude=excl, vocab=vocab)
    given = generate_topk(
        model, tok, prompts, sid_map.trie(), sid_map.items, 5, cfg, exclude=excl, vocab=vocab,
        row_of={item: r for r, item in enumerate(sid_map.items)},
    )
    assert given == built
    assert all(not {i for i, _ in r} & ex for r, ex in zip(given, excl))
