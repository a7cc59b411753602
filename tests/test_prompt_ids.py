"""Prompt ids: every inference path feeds the model the ids SFT (TRL) trained it on, BOS-adding tokenizers included."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from trl.data_utils import _tokenize, common_prefix_length

from conrec.llm.config import DecodeConfig, EarlyStoppingConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.packed_prefill import enable_packed_prefill, worth_packing
from conrec.llm.inference.predict import Predictor
from conrec.llm.inference.prompt_ids import encode_prompts, prompt_token_ids, special_prefix
from conrec.llm.inference.prompts import build_prompt
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.vocab import SidVocab, add_sid_vocabulary
from conrec.llm.training.rollout import ConstrainedRollout, item_token_table

from builders import distinct_sid_scores, sparse_sid_map, with_bos

SIZES = [5, 4, 3]
HISTORIES = [  # prompts of different lengths: the batch is left-padded, or packed
    ([f"m{j}" for j in range(5, 17)], [1, -1] * 6),
    (["m4"], [-1]),
    (["m1", "m2", "m3"], [-1, 1, -1]),
]
LAYOUTS = ["segmented", "merged", "timeline", "neg_timeline", "neg_only"]


@pytest.fixture(scope="module")
def backbone():
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=5)))
    distinct_sid_scores(model, add_sid_vocabulary(model, tok, sid_map))  # no ties
    model.eval()
    return model, tok, sid_map


def prompts_of(sid_map, variant: str) -> list[str]:
    return [build_prompt(h, f, sid_map.sid_lookup(), PromptConfig(variant=variant)) for h, f in HISTORIES]


def trl_prompt_ids(tok, prompt: str, completion: str) -> list[int]:
    """The prompt part of a prompt/completion example as TRL 1.16's SFTTrainer tokenizes it (``tokenize_fn``)."""
    prompt_ids = _tokenize(tok, prompt)["input_ids"]
    full = _tokenize(tok, prompt + completion + tok.eos_token)["input_ids"]
    return full[: common_prefix_length(prompt_ids, full)]


def unpadded(enc: dict[str, torch.Tensor]) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]


class _Accelerator:
    process_index = 0


class _Trainer:
    accelerator = _Accelerator()


def rollout_prompt_ids(tok, sid_map, prompts: list[str]) -> list[list[int]]:
    """The ``prompt_ids`` GRPO's rollout hands TRL for these prompts (one group per prompt, G = 1)."""
    vocab = SidVocab.from_tokenizer(tok, sid_map.codebook_sizes, len(tok))
    rollout = ConstrainedRollout(tok, lambda m, p, k: torch.zeros((len(p), k), dtype=torch.long), sid_map.items,
                                 item_token_table(vocab, sid_map.codes), tok.eos_token_id, 1)
    rollout._generate = lambda trainer, texts: torch.zeros((len(texts), 1), dtype=torch.long)  # type: ignore[method-assign]
    return rollout(prompts, _Trainer())["prompt_ids"]


@pytest.mark.parametrize("variant", LAYOUTS)
def test_smollm2_prompt_ids_are_unchanged(backbone, variant):
    """The shipped models' tokenizer adds no special token: the ids stay the plain text's, left-padded as before."""
    _, tok, sid_map = backbone
    prompts = prompts_of(sid_map, variant)
    assert special_prefix(tok) == []
    tok.padding_side = "left"
    before = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = "right"
    enc = encode_prompts(tok, prompts, torch.device("cpu"))
    assert torch.equal(enc["input_ids"], before["input_ids"]) and torch.equal(enc["attention_mask"], before["attention_mask"])
    assert tok.padding_side == "right"
    assert rollout_prompt_ids(tok, sid_map, prompts) == tok(prompts, add_special_tokens=False)["input_ids"]
    completion = sid_map.sid_of("m9")
    assert [trl_prompt_ids(tok, p, completion) for p in prompts] == unpadded(enc)


@pytest.mark.parametrize("variant", LAYOUTS)
def test_bos_tokenizer_inference_and_rollout_ids_equal_sfts(backbone, variant):
    _, tok, sid_map = backbone
    bos = with_bos(tok)
    prompts = prompts_of(sid_map, variant)
    sft = [trl_prompt_ids(bos, p, sid_map.sid_of("m9")) for p in prompts]
    assert all(ids[0] == bos.bos_token_id and ids[1] != bos.bos_token_id for ids in sft)
    assert unpadded(encode_prompts(bos, prompts, torch.device("cpu"))) == sft  # beam search, exhaustive search, slate scoring
    assert prompt_token_ids(bos, prompts) == sft
    assert rollout_prompt_ids(bos, sid_map, prompts) == sft  # GRPO


def test_bos_scores_and_beams_equal_a_forward_of_the_trained_ids(backbone):
    """Slate scores and beam search, through left padding and the packed prefill, with a BOS in front."""
    model, tok, sid_map = backbone
    bos = with_bos(tok)
    p = Predictor(model, bos, sid_map, PromptConfig(), DecodeConfig(num_beams=8, batch_size=3, exclude_history=False))
    assert enable_packed_prefill(p.model)
    assert worth_packing(encode_prompts(bos, [p.prompt(*h) for h in HISTORIES], torch.device("cpu"))["attention_mask"])

    def oracle(history, item: str) -> float:
        sid = sid_map.sid_of(item)
        ids = torch.tensor(trl_prompt_ids(bos, p.prompt(*history), sid))
        sid_ids = bos(sid, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.cat([ids, torch.tensor(sid_ids)]).unsqueeze(0)).logits[0].float()
        total = 0.0
        for j, t in enumerate(sid_ids):
            level = p.vocab.level_ids[j]
            total += float(torch.log_softmax(logits[len(ids) - 1 + j, level], -1)[(level == t).nonzero().item()])
        return total

    slates = [["m0", "m7", "m24"], ["m9"], ["m3", "m5"]]
    for hist, slate, scores in zip(HISTORIES, slates, p.score(HISTORIES, slates)):
        np.testing.assert_allclose(scores, [oracle(hist, i) for i in slate], rtol=1e-4, atol=1e-4)
    for hist, recs in zip(HISTORIES, p.recommend(HISTORIES, 3)):
        np.testing.assert_allclose([s for _, s in recs], [oracle(hist, i) for i, _ in recs], rtol=1e-4, atol=1e-4)


def test_stages_that_fed_the_lm_prompts_without_a_bos_are_stale_for_a_bos_tokenizer_only(tmp_path):
    """Review: GRPO models, eval results and early-stopped SFT models made before prompts carried the tokenizer's
    special prefix were made from prompts without the BOS a Llama-3, Gemma or Mistral tokenizer adds, yet stayed
    current. A record without the new key is stale when the run's tokenizer adds a prefix, and current otherwise
    (every SmolLM2 run: no fingerprint changed); a stage recorded since carries the key."""
    import json

    from conrec.pipeline import stale_reason
    from conrec.runs import PROMPT_PREFIX_KEY
    from conrec.stages import STAGES

    from builders import finished_run, record_current

    cfg, run = finished_run(tmp_path / "run")
    tok_files = {p.name: p.read_bytes() for p in run.sft_model.glob("tokenizer*")}

    def older(*stages: str) -> None:  # as a conrec from before the prefix recorded them (the later records re-linked)
        for stage in STAGES:
            path = run.stage_dir(stage) / "_fingerprint.json"
            rec = json.loads(path.read_text())
            assert stage not in stages or rec.pop(PROMPT_PREFIX_KEY) is True
            rec["upstream"] = {up: run.stage_identity(up) for up in rec["upstream"]}
            path.write_text(json.dumps(rec))

    older("sft", "grpo", "eval")
    assert {s: stale_reason(run, cfg, s) for s in ("sft", "grpo", "eval")} == dict.fromkeys(("sft", "grpo", "eval"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run.sft_model)
    tok.bos_token = tok.eos_token  # the toy tokenizer has none
    with_bos(tok).save_pretrained(run.sft_model)
    assert tok_files != {p.name: p.read_bytes() for p in run.sft_model.glob("tokenizer*")}
    why = {s: stale_reason(run, cfg, s) for s in ("sft", "grpo", "eval")}
    assert why["sft"] is None  # SFT decodes nothing without early stopping (TRL always tokenized its prompts with the BOS)
    assert why["grpo"] == why["eval"].replace("eval stage", "grpo stage")
    assert why["grpo"].startswith("made by an older conrec whose grpo stage gave the LM its prompts without the tokenizer's special prefix")
    baselines_only = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"models": []})})
    record_current(baselines_only, "eval")
    older("eval")
    assert stale_reason(run, baselines_only, "eval") is None  # an eval of no LM asked it nothing
    stopping = cfg.sft.train.model_copy(update={"early_stopping": EarlyStoppingConfig(eval_steps=1)})
    early = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"train": stopping})})
    record_current(early, "sft")
    older("sft")
    assert stale_reason(run, early, "sft") == why["grpo"].replace("grpo stage", "sft stage")
    record_current(cfg, "sft", "grpo", "eval")  # recorded by this conrec (the SFT model they are built on too): current
    assert stale_reason(run, cfg, "grpo") is None and stale_reason(run, cfg, "eval") is None


def test_a_tokenizer_without_a_pad_token_pads_with_0(backbone):
    """Review: ``int(tokenizer.pad_token_id)`` raised a bare TypeError for a tokenizer with no pad token (a raw
    backbone tokenizer, a served request's 500). The mask hides the padding, so it is 0 and the ids are the same."""
    _, tok, sid_map = backbone
    prompts = prompts_of(sid_map, "segmented")
    bare = copy.deepcopy(tok)
    bare.pad_token = None
    assert bare.pad_token_id is None
    enc, ref = encode_prompts(bare, prompts, torch.device("cpu")), encode_prompts(tok, prompts, torch.device("cpu"))
    assert torch.equal(enc["attention_mask"], ref["attention_mask"]) and unpadded(enc) == unpadded(ref)
    assert (enc["input_ids"][enc["attention_mask"] == 0] == 0).all() and (enc["attention_mask"] == 0).any()
