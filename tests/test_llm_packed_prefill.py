"""Padding-free prefill: a packed batch gives every prompt the numbers it gets padded, and alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conrec.llm.config import DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference import packed_prefill as packing
from conrec.llm.inference.predict import Predictor
from conrec.llm.inference.sid_head import SidHead, decoder_and_head
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import add_sid_vocabulary, save_vocab_meta

from builders import distinct_sid_scores, sparse_sid_map

SIZES = [5, 4, 3]
HISTORIES = [  # prompts of very different lengths, so a padded batch is mostly padding for some rows
    ([f"m{j}" for j in range(5, 17)], [1, -1] * 6),
    (["m4"], [-1]),
    (["m1", "m2", "m3"], [-1, 1, -1]),
    ([f"m{j}" for j in range(0, 24, 3)], [-1] * 8),
]
SLATES = [["m0", "m7", "m24", "m3"], ["m9"], [f"m{j}" for j in range(20)], ["m5", "m6"]]


def _gqa_llama() -> LlamaForCausalLM:
    """Grouped-query attention (2 key/value heads for 4 query heads), so the packed path repeats them."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(cfg).eval()


def _left_padded(lengths: list[int], vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    t = max(lengths)
    ids = torch.zeros(len(lengths), t, dtype=torch.long)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, t - n :] = torch.randint(1, vocab, (n,), generator=gen)
        mask[b, t - n :] = 1
    return ids, mask


def test_packed_prefill_gives_each_prompt_its_padded_numbers_and_cache():
    model = _gqa_llama()
    ids, mask = _left_padded([9, 2, 6, 1])
    with torch.no_grad():
        padded_feats, padded_cache = SidHead(model, [torch.arange(3)]).prefill(ids, mask)
        assert packing.enable_packed_prefill(model) and packing.worth_packing(mask)
        decoder, _ = decoder_and_head(model)
        feats, cache = packing.packed_prefill(decoder, model.config, ids, mask)
    torch.testing.assert_close(feats, padded_feats, atol=1e-5, rtol=1e-5)
    real = mask.bool()
    for ours, theirs in zip(cache.layers, padded_cache.layers):
        for a, b in ((ours.keys, theirs.keys), (ours.values, theirs.values)):
            assert a.shape == b.shape  # (prompts, key/value heads, padded length, head dim)
            torch.testing.assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)
            assert not a.transpose(1, 2)[~real].any()  # padding holds zeros, hidden by the attention mask


def test_ordinary_calls_are_plain_sdpa_after_the_switch():
    model = _gqa_llama()
    ids, mask = _left_padded([7, 4])
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
        packing.enable_packed_prefill(model)
        after = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(after, before)


def test_models_that_cannot_pack_keep_their_attention():
    eager = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, attn_implementation="eager"))
    assert not packing.enable_packed_prefill(eager) and eager.config._attn_implementation == "eager"
    sliding, _ = load_backbone(ModelConfig(tiny=TinyModelConfig(architecture="gemma3")))  # sliding-window layers
    assert not packing.enable_packed_prefill(sliding) and sliding.config._attn_implementation == "sdpa"
    assert not packing.worth_packing(torch.ones(1, 5, dtype=torch.long))  # one prompt: nothing to pack
    assert not packing.worth_packing(torch.ones(3, 5, dtype=torch.long))  # no padding: one SDPA call is as cheap


def _predictor(packed: bool) -> Predictor:
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=3)))
    distinct_sid_scores(model, add_sid_vocabulary(model, tok, sid_map))
    if packed:
        assert packing.enable_packed_prefill(model)
    return Predictor(model, tok, sid_map, PromptConfig(), DecodeConfig(num_beams=10, batch_size=4))


@pytest.fixture(scope="module")
def predictors() -> tuple[Predictor, Predictor]:
    return _predictor(packed=False), _predictor(packed=True)


def test_batched_answers_equal_padded_and_single_answers(predictors, monkeypatch):
    padded, packed = predictors
    segments: list[int] = []
    inner = packing._packed_sdpa

    def spy(*args, **kwargs):
        if kwargs.get(packing._SEGMENTS) is not None:
            segments.append(len(kwargs[packing._SEGMENTS]))
        return inner(*args, **kwargs)

    monkeypatch.setitem(packing.AttentionInterface._global_mapping, packing.ATTN_IMPLEMENTATION, spy)
    top = packed.recommend(HISTORIES, 7)
    scores = packed.score(HISTORIES, SLATES)
    assert segments and set(segments) == {len(HISTORIES)}  # the batch really was packed, prompt by prompt
    alone = [packed.recommend([h], 7)[0] for h in HISTORIES]
    for ours, ref in ((top, padded.recommend(HISTORIES, 7)), (top, alone)):
        assert [[i for i, _ in r] for r in ours] == [[i for i, _ in r] for r in ref]
        np.testing.assert_allclose([s for r in ours for _, s in r], [s for r in ref for _, s in r], rtol=5e-6, atol=1e-5)
    for ref in (padded.score(HISTORIES, SLATES), [packed.score([h], [s])[0] for h, s in zip(HISTORIES, SLATES)]):
        for a, b in zip(scores, ref):
            np.testing.assert_allclose(a, b, rtol=5e-6, atol=1e-5)


def test_a_model_loaded_for_inference_packs(tmp_path):
    pred = _predictor(packed=False)
    pred.model.save_pretrained(tmp_path)
    pred.tokenizer.save_pretrained(tmp_path)
    save_vocab_meta(tmp_path, pred.sid_map)
    loaded = Predictor.from_dir(tmp_path, pred.sid_map, PromptConfig(), DecodeConfig(num_beams=10))
    assert packing.packs(loaded.model)
