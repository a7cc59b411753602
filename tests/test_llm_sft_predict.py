"""SFT writes a loadable model dir; the Predictor uses it and rejects bad input with clear errors."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from conrec.config import load_config
from conrec.errors import ConfigError, DataValidationError, StageInputError
from conrec.llm.inference import predict as predict_mod
from conrec.llm.inference.predict import Predictor, read_history_json
from conrec.llm.model.toy import write_toy_events, write_toy_run
from conrec.runs import RunDir
from conrec.sid.sid_map import SidMap
from conrec.stages import STAGE_REGISTRY

from builders import record_current


def _cfg(root, lora: bool):
    train = {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 1}
    if lora:
        train["lora"] = {"r": 4, "alpha": 8}
    return load_config(
        None,
        {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "train": train, "max_samples": 40},
         "decode": {"num_beams": 6, "top_k": 5, "batch_size": 4}},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_toy_events(write_toy_run(root, n_items=32, n_users=12))  # `predict --split` reads the events (items rated before t)
    cfg = _cfg(root, lora=True)
    stats = STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")
    return cfg, stats


def test_sft_writes_a_loadable_model_and_marks_done(trained):
    cfg, stats = trained
    run = RunDir(cfg.run_dir)
    assert run.is_done("sft") and stats["steps"] == 2 and np.isfinite(stats["train_loss"])
    assert stats["lora"] and stats["n_examples"] == 40
    assert stats["examples_cut_at_max_length"] == stats["examples_dropped_at_max_length"] == 0  # none at the default 512
    assert stats["items_control_text"] == 0  # no toy title reads as a SID, marker or special token
    files = {p.name for p in run.sft_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "conrec_vocab.json", "sid_map.parquet"} <= files
    assert "adapter_config.json" not in files  # LoRA merged: a plain HF dir
    assert not (run.sft / "checkpoints").exists()  # resume state, deleted once the model is written
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run.sft_model)
    tok = AutoTokenizer.from_pretrained(run.sft_model)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert min(tok.convert_tokens_to_ids(["<a_3>", "<c_3>", "<neg>"])) >= 49152  # added, not unknown


def test_with_lora_n_params_counts_the_saved_model_and_the_adapters_apart(trained):
    """Found by probing: with LoRA, n_params counted the adapters, which are merged away before saving (135,008,064
    for SmolLM2 r 8 on q/v where the saved model holds 134,547,264)."""
    from transformers import AutoModelForCausalLM

    cfg, stats = trained
    model = AutoModelForCausalLM.from_pretrained(RunDir(cfg.run_dir).sft_model)
    assert stats["n_params"] == sum(p.numel() for p in model.parameters())
    assert stats["n_params_non_embedding"] == stats["n_params"] - model.get_input_embeddings().weight.numel()
    assert stats["n_params_lora_adapters"] > 0


def test_full_finetune_also_writes_a_model(tmp_path):
    write_toy_run(tmp_path, n_items=16, n_users=6)
    cfg = _cfg(tmp_path, lora=False)
    out = RunDir(tmp_path).sft_model
    stats = STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")
    assert not stats["lora"] and (out / "config.json").exists()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    emb = model.get_input_embeddings().weight.numel()
    assert stats["n_params"] == sum(p.numel() for p in model.parameters())  # the tied head counted once
    assert stats["n_params_non_embedding"] == stats["n_params"] - emb > 0
    assert stats["n_params_lora_adapters"] is None


def test_predictor_recommends_real_new_items(trained):
    cfg, _ = trained
    p = Predictor.from_run(cfg, model="sft")
    hist = (["i0", "i4", "i1"], [-1, -1, 1])
    recs = p.recommend([hist, (["i2"], [1])], k=5)
    assert [len(r) for r in recs] == [5, 5]
    for r, h in zip(recs, [hist[0], ["i2"]]):
        items = [i for i, _ in r]
        assert len(set(items)) == 5 and set(items) <= set(p.items) and not set(items) & set(h)
    assert p.last_stats["n_invalid"] == 0


def test_predict_samples_table(trained):
    cfg, _ = trained
    samples = pl.read_parquet(RunDir(cfg.run_dir).samples).filter(pl.col("split") == "test")
    preds = predict_mod.predict_samples(cfg, "sft", samples, k=4)
    assert preds.columns == ["sample_id", "items", "scores", "n_invalid"]
    assert preds.schema["items"] == pl.List(pl.String) and preds.schema["scores"] == pl.List(pl.Float64)
    assert preds["sample_id"].to_list() == samples["sample_id"].to_list()
    assert preds["items"].list.len().to_list() == [4] * samples.height
    assert preds["n_invalid"].sum() == 0


def test_predict_samples_checks_k_as_recommend_does(trained):
    """predict_samples(k=2.5) was a TypeError from a slice and k=0 a bare ValueError from deep in the search."""
    cfg, _ = trained
    p = Predictor.from_run(cfg, model="sft")
    samples = pl.read_parquet(RunDir(cfg.run_dir).samples).filter(pl.col("split") == "test").head(2)
    for k in (2.5, "5", None, True, 0):
        with pytest.raises(DataValidationError, match=rf"k must be an integer >= 1, got {re.escape(repr(k))}"):
            p.predict_samples(samples, k=k)  # type: ignore[arg-type]


def test_predict_samples_checks_each_rows_history_but_allows_an_empty_one(trained):
    """A row whose lists did not align, or whose feedback was 0.5 (int() made it 0), was predicted silently; an
    empty history (an evaluation point may have none) is still predicted."""
    cfg, _ = trained
    p = Predictor.from_run(cfg, model="sft")
    samples = pl.read_parquet(RunDir(cfg.run_dir).samples).filter(pl.col("split") == "test").head(2)
    first = samples["hist_items"][0].to_list()
    misaligned = samples.with_columns(hist_feedback=pl.Series([[-1] * (len(first) + 1), samples["hist_feedback"][1].to_list()]))
    with pytest.raises(DataValidationError, match=rf"sample_id {samples['sample_id'][0]}: {len(first)} item id\(s\) but {len(first) + 1} feedback"):
        p.predict_samples(misaligned, k=3)
    half = samples.with_columns(hist_feedback=pl.Series([[0.5] * len(first), samples["hist_feedback"][1].to_list()], dtype=pl.List(pl.Float64)))
    with pytest.raises(DataValidationError, match=r"feedback must be -1 \(dislike\) or \+1 \(positive\), got \[0\.5\]"):
        p.predict_samples(half, k=3)
    empty = samples.with_columns(hist_items=pl.Series([[], first], dtype=pl.List(pl.String)),
                                 hist_feedback=pl.Series([[], samples["hist_feedback"][0].to_list()], dtype=samples.schema["hist_feedback"]))
    assert p.predict_samples(empty, k=3)["items"].list.len().to_list() == [3, 3]


def test_predictor_errors(trained, tmp_path):
    cfg, _ = trained
    p = Predictor.from_run(cfg, model="sft")
    with pytest.raises(DataValidationError, match=r"unknown item id.*'nope'.*'zzz'"):
        p.recommend([(["i0", "nope"], [-1, 1]), (["zzz"], [-1])], k=3)
    with pytest.raises(DataValidationError, match="history #1 is empty"):
        p.recommend([(["i0"], [-1]), ([], [])], k=3)
    with pytest.raises(DataValidationError, match="feedback"):
        p.recommend([(["i0"], [0])], k=3)
    # found by probing: these were tracebacks from int(), the beam search or the prompt builder, or were cut
    for bad_fb, shown in ([["x"], "'x'"], [[None], "None"], [[-1.5], "-1.5"], [[True], "True"]):
        with pytest.raises(DataValidationError, match=rf"feedback must be -1 .*got \[{re.escape(shown)}\]"):
            p.recommend([(["i0"], bad_fb)], k=3)
    import decimal

    import torch

    want = p.recommend([(["i0"], [-1])], k=3)
    for fb in (-1.0, np.int8(-1), decimal.Decimal(-1), torch.tensor(-1)):  # a number of any kind is one
        assert p.recommend([(["i0"], [fb])], k=3) == want
    with pytest.raises(DataValidationError, match="feedback must be"):
        p.recommend([(["i0"], [np.True_])], k=3)
    with pytest.raises(DataValidationError, match="must each be a list, got a string .*pass a list of histories"):
        p.recommend((["i0", "i1"], [-1, 1]), k=3)  # type: ignore[arg-type]  # one history, not a list of them
    for k in (2.5, "5", None, True, 0):
        with pytest.raises(DataValidationError, match=rf"k must be an integer >= 1, got {re.escape(repr(k))}"):
            p.recommend([(["i0"], [-1])], k=k)  # type: ignore[arg-type]
    with pytest.raises(DataValidationError, match=r"candidate slate #0 is a string"):
        p.score([(["i0"], [-1])], ["i3"])
    with pytest.raises(DataValidationError, match="max_pos_items must be an integer >= 0"):
        p.score([(["i0"], [-1])], [["i3"]], max_pos_items=-1)
    with pytest.raises(StageInputError, match="grpo model cannot be used with this config: no model at"):
        Predictor.from_run(cfg, model="grpo")
    with pytest.raises(ConfigError, match="unknown model"):
        Predictor.from_run(cfg, model="best")


def test_model_not_matching_the_run_sid_map_is_rejected(trained, tmp_path):
    cfg, _ = trained
    run = RunDir(cfg.run_dir)
    original = SidMap.from_parquet(run.sid_map)
    codes = original.codes
    codes[[0, 1]] = codes[[1, 0]]
    other = run.root.parent / "other_run"
    other_cfg = cfg.model_copy(update={"run_dir": other})
    import shutil

    shutil.copytree(run.root, other)  # the model and the stages it is built on with their records: current, only the SID map differs
    SidMap(original.items, codes, original.codebook_sizes).to_parquet(RunDir(other).sid_map)
    with pytest.raises(StageInputError, match="different item <-> SID assignment"):
        Predictor.from_run(other_cfg, model="sft")


def test_history_json_formats(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"neg": ["x", "y"], "pos": ["z"]}))  # old names, still accepted
    assert read_history_json(a) == (["z", "x", "y"], [1, -1, -1])
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"history": [{"item_id": "z", "feedback": 1}, {"item_id": "x", "feedback": -1}]}))
    assert read_history_json(b) == (["z", "x"], [1, -1])
    c = tmp_path / "c.json"
    c.write_text(json.dumps({"likes": []}))
    with pytest.raises(DataValidationError, match="expected"):
        read_history_json(c)
    # a directory or a file that is not UTF-8: one line each (they were IsADirectoryError, UnicodeDecodeError)
    (tmp_path / "latin.json").write_bytes('{"negative": ["caf\xe9"]}'.encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"history file .*latin\.json is not UTF-8 text"):
        read_history_json(tmp_path / "latin.json")
    with pytest.raises(DataValidationError, match="is a directory"):
        read_history_json(tmp_path)


def test_cli_run_split_writes_parquet(trained, tmp_path):
    cfg, _ = trained
    out = tmp_path / "p.parquet"
    preds = predict_mod.run(cfg, history=None, split="valid", out=out, model="sft", k=3)
    assert out.exists() and pl.read_parquet(out).height == preds.height > 0
    # who and when beside the run-internal sample id: the file joins to the user's own tables
    samples = pl.read_parquet(RunDir(cfg.run_dir).samples).filter(pl.col("split") == "valid")
    assert preds.columns[:3] == ["sample_id", "user_id", "ts"]
    assert preds.select("sample_id", "user_id", "ts").sort("sample_id").equals(samples.select("sample_id", "user_id", "ts").sort("sample_id"))
    with pytest.raises(ConfigError, match="exactly one"):
        predict_mod.run(cfg, history=None, split=None, out=None, model="sft", k=3)


def test_completion_loss_equals_the_models_own_loss_on_right_padded_batches():
    import torch

    from conrec.llm.config import ModelConfig, TinyModelConfig
    from conrec.llm.model.backbone import load_backbone
    from conrec.llm.training.sft import completion_loss

    model, _ = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=3)))
    model.eval()
    gen = torch.Generator().manual_seed(0)
    lengths, t = [9, 5, 12], 12
    ids = torch.zeros(3, t, dtype=torch.long)
    mask = torch.zeros(3, t, dtype=torch.long)
    labels = torch.full((3, t), -100)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(5, 500, (n,), generator=gen)
        mask[r, :n] = 1
        labels[r, n - 3 : n] = ids[r, n - 3 : n]  # the last 3 tokens are the completion
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        got, _ = completion_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert got.item() == pytest.approx(want.item(), rel=1e-4)


def test_level_softmax_scores_sid_targets_among_their_levels_codes_only():
    import torch

    from conrec.llm.config import ModelConfig, TinyModelConfig
    from conrec.llm.model.backbone import load_backbone
    from conrec.llm.training.sft import completion_loss

    model, _ = load_backbone(ModelConfig(tiny=TinyModelConfig(seed=3)))
    model.eval()
    vocab_size = model.get_input_embeddings().weight.shape[0]
    # pretend tokens 100..109 are level-0 codes and 200..209 level-1 codes; everything else is text
    token_level = torch.full((vocab_size,), -1, dtype=torch.long)
    token_level[100:110], token_level[200:210] = 0, 1
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 500, (2, 8), generator=gen)
    ids[:, 5], ids[:, 6], ids[:, 7] = torch.tensor([103, 107]), torch.tensor([201, 209]), torch.tensor([42, 77])
    labels = torch.full_like(ids, -100)
    labels[:, 5:] = ids[:, 5:]  # completion: a level-0 code, a level-1 code, one text token
    mask = torch.ones_like(ids)
    with torch.no_grad():
        got, _ = completion_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, token_level=token_level)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    want = 0.0
    for r in range(2):
        lp0 = torch.log_softmax(logits[r, 4, 100:110], -1)[ids[r, 5] - 100]
        lp1 = torch.log_softmax(logits[r, 5, 200:210], -1)[ids[r, 6] - 200]
        lp_text = torch.log_softmax(logits[r, 6], -1)[ids[r, 7]]
        want -= float(lp0 + lp1 + lp_text)
    assert got.item() == pytest.approx(want / 6, rel=1e-4)


def test_examples_cut_at_max_length_are_counted_and_warned_about(tmp_path):
    """TRL keeps an example's start, so one longer than max_length loses its answer tokens and trains on
    nothing, without a word (a helper measured it at max_length 16)."""
    from rich.console import Console

    write_toy_run(tmp_path, n_items=16, n_users=6)
    cfg = load_config(None, {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 8,
                                                               "train": {"max_steps": 1, "batch_size": 4, "max_length": 16}}})
    console = Console(record=True, width=300)
    stats = STAGE_REGISTRY["sft"].call(cfg, console=console)
    lost = stats["examples_cut_at_max_length"] + stats["examples_dropped_at_max_length"]
    assert stats["examples_dropped_at_max_length"] > 0 and lost <= stats["n_examples"]  # TRL drops those left without answer
    assert f"{lost} of {stats['n_examples']} SFT examples reach sft.train.max_length (16 tokens)" in console.export_text()


def test_many_examples_are_announced_before_trl_tokenizes_them(tmp_path, monkeypatch):
    """TRL tokenizes every example before the first step with nothing on screen: 82 s for 155,930 examples at 20,000
    users (a medium-scale probe, 7 December 2026). From ANNOUNCE_TOKENIZING examples the stage says so first, in a line
    the progress anchors (``SFT: ``) do not match."""
    from rich.console import Console

    from conrec.llm.training import sft as sft_mod

    write_toy_run(tmp_path, n_items=16, n_users=6)
    cfg = load_config(None, {"run_dir": str(tmp_path), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 8,
                                                               "train": {"max_steps": 1, "batch_size": 4}}})
    for threshold, said in ((8, True), (9, False)):
        monkeypatch.setattr(sft_mod, "ANNOUNCE_TOKENIZING", threshold)
        console = Console(record=True, width=300)
        stats = STAGE_REGISTRY["sft"].call(cfg, console=console)
        text = console.export_text()
        assert stats["n_examples"] == 8
        assert ("tokenizing 8 SFT examples before the first step" in text) is said
        if said:
            assert text.index("tokenizing 8 SFT examples") < text.index("SFT: ")


def test_a_predictor_shows_its_run_model_catalogue_and_device(trained):
    """Found in review: a notebook showed ``<conrec.llm.inference.predict.Predictor object at 0x...>`` for
    ``Predictor.from_run(...)``; now what answers, and where: the run and model, or the model directory it was loaded
    from, or (built from objects) the model's class."""
    cfg, _ = trained
    run = RunDir(cfg.run_dir)
    p = Predictor.from_run(cfg, "sft")
    n = len(p.items)
    assert repr(p) == f"Predictor(run_dir={str(cfg.run_dir)!r}, model='sft', items={n}, device='cpu', search='beam')"
    q = Predictor.from_dir(run.sft_model, p.sid_map, cfg.sft.prompt, cfg.decode)
    assert repr(q) == f"Predictor(model_dir={str(run.sft_model)!r}, items={n}, device='cpu', search='beam')"
    r = Predictor(p.model, p.tokenizer, p.sid_map, cfg.sft.prompt, cfg.decode.model_copy(update={"search": "exhaustive"}))
    assert repr(r) == f"Predictor(model={type(p.model).__name__}, items={n}, device='cpu', search='exhaustive')"


def test_a_half_built_predictor_still_has_a_repr(trained):
    """Found in review: ``repr`` of a Predictor made with ``__new__`` (as tests do), or whose ``__init__`` failed
    part-way, raised AttributeError, so a debugger or a log line failed while describing the error; now ``?``
    stands for what it lacks."""
    cfg, _ = trained
    assert repr(Predictor.__new__(Predictor)) == "Predictor(model=?, items=?, device=?, search='?')"
    p = Predictor.from_run(cfg, "sft")
    half = Predictor.__new__(Predictor)
    half.model, half.run_dir, half.model_dir = p.model, None, None  # __init__ stopped before the SID map was read
    assert repr(half) == f"Predictor(model={type(p.model).__name__}, items=?, device='cpu', search='?')"
