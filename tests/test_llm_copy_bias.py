"""The copy bias (sft.copy_bias): counted by hand, the same in training and in every decoding path,
saved with the model, refused where it cannot be honoured."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conrec.config import load_config
from conrec.errors import ConfigError, StageInputError
from conrec.llm.config import CopyBiasConfig, DecodeConfig, ModelConfig, PromptConfig, TinyModelConfig
from conrec.llm.inference.constrained import generate_topk
from conrec.llm.inference.exhaustive import exhaustive_topk
from conrec.llm.inference.predict import Predictor
from conrec.llm.inference.prompt_ids import prompt_token_ids
from conrec.llm.model import copy_bias
from conrec.llm.model.backbone import load_backbone
from conrec.llm.model.toy import write_toy_run
from conrec.llm.model.vocab import SidVocab, add_sid_vocabulary
from conrec.llm.training.losses import CodeBias, level_softmax_loss
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap
from conrec.stages import STAGE_REGISTRY

from builders import distinct_sid_scores, interrupt_sft, record_current, sparse_sid_map

# token ids of a hand-built vocabulary: 0-2 text; level 0 codes 0, 1 = tokens 4, 3 (not in code order);
# level 1 codes 0, 1 = tokens 5, 6; markers 10-17
DIS, LIKE, NEG, NEG_END, POS, POS_END, HIST, HIST_END = range(10, 18)
MARKERS = {"<dis>": DIS, "<like>": LIKE, "<neg>": NEG, "</neg>": NEG_END, "<pos>": POS, "</pos>": POS_END, "<hist>": HIST, "</hist>": HIST_END}


class _Tokenizer:
    def convert_tokens_to_ids(self, token: str) -> int:
        return MARKERS[token]


def _vocab() -> SidVocab:
    to_code = torch.full((20,), -1, dtype=torch.long)
    to_level = torch.full((20,), -1, dtype=torch.long)
    level_ids = (torch.tensor([4, 3]), torch.tensor([5, 6]))
    for lv, ids in enumerate(level_ids):
        to_code[ids], to_level[ids] = torch.arange(2), lv
    return SidVocab((2, 2), level_ids, to_code, to_level)


def _bias(beta=(1.0, 2.0), learn=False) -> copy_bias.CopyBias:
    return copy_bias.CopyBias(list(beta), _vocab(), _Tokenizer(), learn=learn)


def test_counts_only_disliked_sids_and_skips_positive_context():
    # <hist> <dis> [c0, c0] <like> [c1, c1] <dis> [c0, c1] <dis>
    ids = torch.tensor([[HIST, DIS, 4, 5, LIKE, 3, 6, DIS, 4, 6, DIS]])
    b0, b1 = _bias().sequence_bias(ids)
    # after the last <dis>: level 0 saw code 0 twice, level 1 codes 0 and 1 once each (the liked item not at all)
    np.testing.assert_allclose(b0[0, -1], [math.log(3), 0.0], atol=1e-6)
    np.testing.assert_allclose(b1[0, -1], [2 * math.log(2), 2 * math.log(2)], atol=1e-6)
    assert float(b0[0, 1].abs().sum()) == 0.0  # at the first <dis> nothing was disliked yet
    assert float(b0[0, 5].abs().sum() + b1[0, 5].abs().sum()) == 0.0  # inside a positive event: no bias
    np.testing.assert_allclose(b0[0, 3], [math.log(2), 0.0], atol=1e-6)  # counts include only tokens so far


def test_segmented_prompt_counts_the_negative_segment_and_biases_the_answer():
    # <neg> [c1, c0] [c0, c1] </neg> text <pos> [c1, c1] </pos> Answer-ish text token
    ids = torch.tensor([[NEG, 3, 5, 4, 6, NEG_END, 1, POS, 3, 6, POS_END, 2]])
    b0, b1 = _bias((1.0, 1.0)).prompt_bias(ids)
    np.testing.assert_allclose(b0[0], [math.log(2), math.log(2)], atol=1e-6)
    np.testing.assert_allclose(b1[0], [math.log(2), math.log(2)], atol=1e-6)  # <pos>'s c1 is not counted


def test_prompt_bias_is_the_sequence_bias_at_the_last_token_and_ignores_padding():
    cb = _bias((0.7, 1.3))
    a = [HIST, DIS, 4, 5, DIS, 3, 6, LIKE, 4, 6, DIS]
    b = [NEG, 4, 6, NEG_END, 1, 2]
    pad = 4  # a padding id that is an SID token: masked positions must count as nothing
    ids = torch.tensor([a, [pad] * (len(a) - len(b)) + b])
    mask = torch.tensor([[1] * len(a), [0] * (len(a) - len(b)) + [1] * len(b)])
    got = cb.prompt_bias(ids, mask)
    for lv in range(2):
        np.testing.assert_allclose(got[lv][0], cb.sequence_bias(ids[:1])[lv][0, -1], atol=1e-6)
        np.testing.assert_allclose(got[lv][1], cb.sequence_bias(torch.tensor([b]))[lv][0, -1], atol=1e-6)
    np.testing.assert_allclose(got[0][1], [math.log(2) * 0.7, 0.0], atol=1e-6)


def test_betas_are_checked_and_padded_per_level():
    assert _bias((0.5,)).betas() == [0.5, 0.0]
    with pytest.raises(ValueError, match="at most 2"):
        _bias((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        _bias((float("nan"),))


def test_level_softmax_loss_adds_the_bias_in_code_order():
    token_level = _vocab().token_level
    targets = torch.tensor([[-100, 3, -100]])  # level 0, code 1 (token 3, which sorts before token 4 = code 0)
    bias = CodeBias([torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]]]), torch.zeros(1, 3, 2)], _vocab().token_to_code)
    hidden, head = torch.zeros(1, 3, 4), torch.randn(20, 4)
    got = level_softmax_loss(hidden, targets, head, token_level, bias=bias)
    # logits in code order (code 0: 2, code 1: 0); the target is code 1
    assert float(got) == pytest.approx(-float(torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[1]), abs=1e-6)
    assert float(level_softmax_loss(hidden, targets, head, token_level)) == pytest.approx(math.log(2), abs=1e-6)


def test_a_learned_beta_gets_a_gradient():
    cb = _bias((1.0, 1.0), learn=True)
    ids = torch.tensor([[DIS, 4, 5, DIS, 4, 6, DIS]])
    targets = torch.full_like(ids, -100)
    targets[0, 4] = 6  # position 4 (the 2nd dislike's level-0 token) predicts its level-1 code 1
    per = cb.sequence_bias(ids)
    loss = level_softmax_loss(torch.zeros(1, 7, 4), targets, torch.zeros(20, 4), _vocab().token_level, bias=CodeBias(per, cb.token_code))
    loss.backward()
    assert cb.raw_beta.grad is not None and float(cb.raw_beta.grad[1]) > 0  # code 0 was copied, the target is code 1: lower beta_1


# --------------------------------------------------------------------------- every decoding path agrees
SIZES = [5, 4, 3]
HISTORIES = [(["m1", "m2", "m3"], [-1, 1, -1]), (["m4"], [-1]), ([f"m{j}" for j in range(5, 15)], [1, -1] * 5)]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    sid_map = sparse_sid_map(SIZES, 25)
    model, tok = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=3)))
    vocab = add_sid_vocabulary(model, tok, sid_map)
    distinct_sid_scores(model, vocab)
    copy_bias.attach(model, copy_bias.CopyBias([1.5, 1.0, 0.5], vocab, tok))
    return Predictor(model, tok, sid_map, PromptConfig(variant="timeline"), DecodeConfig(num_beams=10, batch_size=2))


def oracle(p: Predictor, history: tuple[list[str], list[int]], item: str, with_bias: bool = True) -> float:
    """One plain forward of prompt + SID: per level, log-softmax over the level's codes of the logits
    plus the copy bias at that position."""
    prompt_ids = torch.tensor(prompt_token_ids(p.tokenizer, [p.prompt(*history)])[0])  # as inference encodes it
    sid_ids = p.tokenizer(p.sid_map.sid_of(item), add_special_tokens=False)["input_ids"]
    ids = torch.cat([prompt_ids, torch.tensor(sid_ids)]).unsqueeze(0)
    with torch.no_grad():
        logits = p.model(input_ids=ids).logits[0].float()
        bias = copy_bias.copy_bias_of(p.model).sequence_bias(ids)
    n, total = len(prompt_ids), 0.0
    for j, t in enumerate(sid_ids):
        level = p.vocab.level_ids[j]
        row = logits[n - 1 + j, level] + (bias[j][0, n - 1 + j] if with_bias else 0.0)
        total += float(torch.log_softmax(row, -1)[(level == t).nonzero().item()])
    return total


def test_slate_scores_include_the_bias_on_every_path(predictor, monkeypatch):
    from conrec.llm.inference import scoring, sid_head

    slates = [["m0", "m7", "m24", "m3"], ["m9"], [f"m{j}" for j in range(20)]]
    tree = predictor.score(HISTORIES, slates)
    for hist, slate, got in zip(HISTORIES, slates, tree):
        np.testing.assert_allclose(got, [oracle(predictor, hist, i) for i in slate], atol=1e-4)
    # not vacuous: the histories' dislikes move the scores
    assert max(abs(s - oracle(predictor, HISTORIES[2], i, with_bias=False)) for s, i in zip(tree[2], slates[2])) > 0.1
    monkeypatch.setattr(scoring, "tree_attention_ok", lambda model: False)
    for a, b in zip(tree, predictor.score(HISTORIES, slates)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    monkeypatch.setattr(sid_head, "decoder_and_head", lambda model: None)
    for a, b in zip(tree, predictor.score(HISTORIES, slates)):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("tree", [True, False])
def test_beam_and_exhaustive_search_rank_by_the_biased_scores(predictor, monkeypatch, tree):
    from conrec.llm.inference import sid_beam

    if not tree:
        monkeypatch.setattr(sid_beam, "tree_attention_ok", lambda model: False)
    prompts = [predictor.prompt(*h) for h in HISTORIES]
    beams = generate_topk(predictor.model, predictor.tokenizer, prompts, predictor.trie, predictor.items, 5,
                          DecodeConfig(num_beams=25, exclude_history=False), vocab=predictor.vocab)
    exact = exhaustive_topk(predictor.model, predictor.tokenizer, prompts, predictor._sid_token_ids, predictor.vocab.level_ids,
                            predictor.items, 5)
    for hist, b, e in zip(HISTORIES, beams, exact):
        want = sorted(((oracle(predictor, hist, i), i) for i in predictor.items), reverse=True)[:5]
        assert [i for i, _ in e] == [i for _, i in want] == [i for i, _ in b]  # 25 beams = the whole catalogue
        np.testing.assert_allclose([s for _, s in b], [s for s, _ in want], atol=1e-4)


# --------------------------------------------------------------------------- the stage: trained, saved, loaded, refused
def _cfg(root, copy: dict, lora: bool = False):
    train: dict = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 1, "learning_rate": 0.05}
    if lora:
        train["lora"] = {"r": 4, "alpha": 8}
    return load_config(
        None,
        {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "train": train, "max_samples": 40, "copy_bias": copy},
         "decode": {"num_beams": 6, "top_k": 5, "batch_size": 4}, "eval": {"models": ["sft"]}},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy")
    write_toy_run(root, n_items=32, n_users=12)
    cfg = _cfg(root, {"beta": [1.0, 1.0], "learn": True})
    stats = STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")
    return cfg, stats


def test_sft_trains_saves_and_reloads_the_betas(trained):
    cfg, stats = trained
    model_dir = RunDir(cfg.run_dir).sft_model
    saved = json.loads((model_dir / copy_bias.COPY_BIAS_FILE).read_text())["beta"]
    assert saved == stats["copy_bias"] and len(saved) == 3
    assert saved != [1.0, 1.0, 0.0]  # learned: the optimiser moved them
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as fh:  # the weights stay a plain HF model
        assert not [k for k in fh.keys() if copy_bias.ATTRIBUTE in k]
    p = Predictor.from_run(cfg, "sft")
    loaded = copy_bias.copy_bias_of(p.model)
    assert loaded is not None and loaded.betas() == pytest.approx(saved)
    assert p.recommend([(p.items[:2], [-1, -1])], 3)[0]


def test_a_model_without_the_file_has_no_bias_and_a_corrupt_file_is_named(trained, tmp_path):
    import shutil

    cfg, _ = trained
    model_dir = tmp_path / "model"
    shutil.copytree(RunDir(cfg.run_dir).sft_model, model_dir)
    sid_map = SidMap.from_parquet(RunDir(cfg.run_dir).sid_map)
    (model_dir / copy_bias.COPY_BIAS_FILE).write_text('{"beta": [1.0, "x"]}')
    with pytest.raises(StageInputError, match="conrec_copy_bias.json is corrupt"):
        Predictor.from_dir(model_dir, sid_map, cfg.sft.prompt, cfg.decode)
    (model_dir / copy_bias.COPY_BIAS_FILE).unlink()
    assert copy_bias.copy_bias_of(Predictor.from_dir(model_dir, sid_map, cfg.sft.prompt, cfg.decode).model) is None


def test_grpo_refuses_a_model_with_a_copy_bias(trained):
    cfg, _ = trained
    with pytest.raises(ConfigError, match="set eval.models: \\[sft\\]"):  # the config alone says so, before any training
        load_config(None, {"run_dir": cfg.run_dir, "sft": {"copy_bias": {"beta": [1.0]}}})
    plain = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"copy_bias": CopyBiasConfig()})})
    with pytest.raises(ConfigError, match="grpo cannot train a model with a copy bias"):  # a model dir that has one
        STAGE_REGISTRY["grpo"].call(plain)


def test_the_pipeline_skips_grpo_for_a_model_with_a_copy_bias(tmp_path, monkeypatch):
    from conrec import pipeline

    ran: list[str] = []
    monkeypatch.setattr(pipeline, "run_stage", lambda cfg, stage, console=None, **kw: ran.append(stage))
    monkeypatch.setattr(pipeline, "stale_reason", lambda run, cfg, stage: "not finished")
    monkeypatch.setattr(pipeline, "_fingerprint_path", lambda run, stage: _seconds_file(tmp_path))
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"copy_bias": {"learn": True}}, "eval": {"models": ["sft"]}})
    pipeline.run_pipeline(cfg)
    assert ran == ["data", "sid", "sft", "eval"]
    ran.clear()
    pipeline.run_pipeline(load_config(None, {"run_dir": str(tmp_path / "run2"), "eval": {"models": ["sft"]}}))
    assert ran == ["data", "sid", "sft", "grpo", "eval"]  # without it GRPO trains as before


def _seconds_file(root):
    path = root / "fp.json"
    path.write_text('{"seconds": 0.0}')
    return path


@pytest.mark.parametrize(
    ("copy", "train", "needle"),
    [
        ({"beta": [1.0], "learn": True}, {"lora": {"r": 4, "alpha": 8}}, "LoRA"),
        ({"beta": [1.0]}, {"sid_softmax": "vocab"}, "dense level-softmax"),
        ({"beta": [1.0, 1.0, 1.0, 1.0]}, {}, "4 values but the SIDs have 3 levels"),
    ],
)
def test_settings_it_cannot_train_with_are_one_line_errors(tmp_path, copy, train, needle):
    write_toy_run(tmp_path, n_items=16, n_users=6)
    base = {"max_steps": 1, "batch_size": 4, **train}
    settings = {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 3}}, "train": base, "max_samples": 8, "copy_bias": copy},
                "eval": {"models": ["sft"]}}
    if train:  # settings that contradict each other: the config is refused (`conrec config` too)
        with pytest.raises(ConfigError, match=needle):
            load_config(None, settings)
        cfg = load_config(None, {**settings, "sft": {**settings["sft"], "train": {"max_steps": 1, "batch_size": 4}}})
        sft_train = cfg.sft.train.model_validate({**cfg.sft.train.model_dump(), **train})
        cfg = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"train": sft_train})})  # no validator runs here
    else:  # the SID map's levels: known from the run only
        cfg = load_config(None, settings)
    with pytest.raises(ConfigError, match=needle):
        STAGE_REGISTRY["sft"].call(cfg)


def test_a_resumed_run_continues_the_learned_betas(tmp_path, monkeypatch):
    """The betas live in the trainer's checkpoints with the weights: a run killed after step 3 and resumed ends
    with the betas (and weights) of an uninterrupted run."""
    from safetensors.torch import load_file

    def train(root):
        if not root.exists():
            write_toy_run(root, n_items=32, n_users=12)
        cfg = _cfg(root, {"beta": [1.0, 0.5], "learn": True})
        cfg = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"train": cfg.sft.train.model_copy(update={"max_steps": 4})})})
        STAGE_REGISTRY["sft"].call(cfg)
        model_dir = RunDir(root).sft_model
        return copy_bias.saved_betas(model_dir), load_file(str(model_dir / "model.safetensors"))

    whole_betas, whole = train(tmp_path / "whole")
    interrupt_sft(monkeypatch, 3, lambda: train(tmp_path / "resumed"))
    betas, weights = train(tmp_path / "resumed")
    assert betas == pytest.approx(whole_betas, abs=1e-6) and betas != [1.0, 0.5, 0.0]
    assert all(torch.equal(weights[k], whole[k]) for k in whole)
