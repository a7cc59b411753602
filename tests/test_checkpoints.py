"""Crash-safe checkpoints (issue 13.2): SFT resumes from its last complete checkpoint, incomplete
checkpoints are skipped, and a resumed run ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conrec.config import load_config
from conrec.llm.model.checkpoints import (
    COMPLETE_FILE,
    OWNER_FILE,
    TiedHeadLoad,
    discard_reason,
    last_complete_checkpoint,
    newest_complete_checkpoint,
    prepare_checkpoint_dir,
    process_change,
    restart_note,
    resumed_processes,
    untied_missing_keys,
    whole_run_mean_loss,
)
from conrec.llm.model.toy import write_toy_events, write_toy_run
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import interrupt_sft, trainer_warnings


def _cfg(root: Path):
    return load_config(
        None,
        {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 48,
                                        "train": {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "save_steps": 1}}},
    )


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("a") / "run"
    write_toy_run(root, n_items=32, n_users=12)
    STAGE_REGISTRY["sft"].call(_cfg(root))
    return _weights(RunDir(root).sft_model)


def test_sft_resumes_from_last_complete_checkpoint_and_matches_uninterrupted(uninterrupted, tmp_path, monkeypatch):
    root = tmp_path / "run"
    write_toy_run(root, n_items=32, n_users=12)
    cfg = _cfg(root)
    interrupt_sft(monkeypatch, 3, lambda: STAGE_REGISTRY["sft"].call(cfg))
    ckpts = RunDir(root).sft / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # a kill while checkpoint-2 was being written: weights there, completion marker not yet
    (ckpts / "checkpoint-2" / COMPLETE_FILE).unlink()
    buf = io.StringIO()
    with trainer_warnings() as warned:
        stats = STAGE_REGISTRY["sft"].call(cfg, console=Console(file=buf, width=40))
    assert stats["resumed_from"] == "checkpoint-1" and stats["steps"] == 4
    assert not [w for w in warned if "missing keys" in w], warned  # the tied head is not missing (test_a_resume_names_...)
    assert buf.getvalue().count("SFT: resuming from checkpoint-1") == 1
    # the model dir after "->" is whole, though longer than the console (it was broken at the width)
    assert any(ln.endswith(f" -> {RunDir(root).sft_model}") for ln in buf.getvalue().splitlines()), buf.getvalue()
    # the discernment check after the bar says how many questions it asks, and its bar counts them off a terminal
    n = stats["discernment"]["n_questions"]
    assert f"SFT: discernment check on {n} held-out four-choice questions (at most sft.discernment_eval = 200)" in buf.getvalue().splitlines()
    assert any(ln.startswith(f"SFT discernment: {n}/{n} (100%), ") for ln in buf.getvalue().splitlines()), buf.getvalue()
    got = _weights(RunDir(root).sft_model)
    assert got.keys() == uninterrupted.keys()
    assert all(torch.equal(got[k], uninterrupted[k]) for k in got)
    assert not ckpts.exists()  # deleted once the model is written


def test_a_resume_names_a_missing_weight_but_not_the_tied_head():
    """Found in review: every SFT and GRPO resume printed transformers' "There were missing keys in the checkpoint
    model loaded: ['lm_head.weight']": a tied head is saved once, as the embedding, and filled by loading it. The
    warning now leaves out a weight tied to a loaded one, and still names a weight that is really missing."""
    from torch.nn.modules.module import _IncompatibleKeys
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    def model(tied: bool) -> LlamaForCausalLM:
        return LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tied))

    class Probe(TiedHeadLoad, Trainer):
        pass

    def warned(m: LlamaForCausalLM, missing: list[str]) -> list[str]:
        trainer = Probe.__new__(Probe)  # only the load's warnings are asked of it: no training arguments
        trainer.model = m
        with trainer_warnings() as said:
            trainer._issue_warnings_after_load(_IncompatibleKeys(missing, []))
        return said

    tied = model(tied=True)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert warned(tied, ["lm_head.weight"]) == []
    assert warned(tied, ["lm_head.weight", "model.norm.weight"]) == ["There were missing keys in the checkpoint model loaded: ['model.norm.weight']."]
    # nothing loaded the shared tensor: both names are missing; an untied head is missing by itself
    assert untied_missing_keys(tied, ["model.embed_tokens.weight", "lm_head.weight"]) == ["model.embed_tokens.weight", "lm_head.weight"]
    assert warned(model(tied=False), ["lm_head.weight"]) == ["There were missing keys in the checkpoint model loaded: ['lm_head.weight']."]


def test_checkpoints_of_samples_an_upstream_rerun_replaced_are_not_resumed(tmp_path, monkeypatch):
    """Found by probing: the events file refreshed in place after an interrupted SFT reran the data stage (same
    settings, other samples), and SFT then resumed its checkpoint of the old samples."""
    root = tmp_path / "run"
    write_toy_run(root, n_items=32, n_users=12)
    run = RunDir(root)
    for stage in ("data", "sid"):  # finished, as the pipeline leaves them
        run.mark_done(stage)
        (run.stage_dir(stage) / "_fingerprint.json").write_text("{}")
    cfg = _cfg(root)
    interrupt_sft(monkeypatch, 3, lambda: STAGE_REGISTRY["sft"].call(cfg))
    before = run.stage_identity("data")
    run.mark_done("data")  # the data stage ran again, with the same settings (in the same second, even)
    assert run.stage_identity("data") != before
    assert (run.data / "_done.json").read_text().count('"nonce"') == 1
    buf = io.StringIO()
    stats = STAGE_REGISTRY["sft"].call(cfg, console=Console(file=buf, width=80))
    assert stats["resumed_from"] is None and stats["steps"] == 4
    # said, in one line, not silent (the Ctrl-C line had promised a resume)
    assert "SFT: the earlier run's checkpoints are discarded (made with other settings or inputs): training starts from step 0" \
        in buf.getvalue().splitlines(), buf.getvalue()


def test_no_resume_or_changed_config_discards_checkpoints(tmp_path):
    folder = tmp_path / "ckpts"
    assert discard_reason(folder, "fp1", resume=False) is None  # nothing there: nothing to say
    (folder / "checkpoint-5").mkdir(parents=True)
    assert discard_reason(folder, "fp1", resume=True) == "made with other settings or inputs"
    assert not prepare_checkpoint_dir(folder, "fp1", resume=True)  # no owner record yet
    (folder / "checkpoint-5").mkdir()
    assert discard_reason(folder, "fp1", resume=True) is None
    assert prepare_checkpoint_dir(folder, "fp1", resume=True) and (folder / "checkpoint-5").exists()
    assert discard_reason(folder, "fp1", resume=False) == "resume is off (--no-resume or --force)"
    assert not prepare_checkpoint_dir(folder, "fp1", resume=False) and not (folder / "checkpoint-5").exists()
    (folder / "checkpoint-5").mkdir()
    assert discard_reason(folder, "fp2", resume=True) == "made with other settings or inputs"
    assert not prepare_checkpoint_dir(folder, "fp2", resume=True) and not (folder / "checkpoint-5").exists()


def test_only_the_main_process_says_sft_resumes(tmp_path, monkeypatch):
    """Under torchrun each process printed "SFT: resuming from checkpoint-N": here the one process is told it is
    not the main one (the Trainer's own state is left alone, so it still writes the model)."""
    import accelerate

    root = tmp_path / "run"
    write_toy_run(root, n_items=32, n_users=12)
    cfg = _cfg(root)
    interrupt_sft(monkeypatch, 3, lambda: STAGE_REGISTRY["sft"].call(cfg))

    class WorkerState(accelerate.PartialState):
        is_main_process = False

    monkeypatch.setattr(accelerate, "PartialState", WorkerState)
    buf = io.StringIO()
    stats = STAGE_REGISTRY["sft"].call(cfg, console=Console(file=buf, width=200))
    assert stats["resumed_from"] == "checkpoint-2"
    assert "SFT: resuming from" not in buf.getvalue(), buf.getvalue()


def test_checkpoints_made_with_another_number_of_processes_are_refused_not_resumed(tmp_path, monkeypatch):
    """Found by probing: a 2-process torchrun SFT killed after checkpoint-20 was resumed by `conrec sft` (1 process)
    without a word, and sft/stats.json said num_processes 1 for a model whose first 20 steps had twice the batch."""
    from conrec.errors import ConfigError

    root = tmp_path / "run"
    write_toy_run(root, n_items=32, n_users=12)
    cfg = _cfg(root)
    interrupt_sft(monkeypatch, 3, lambda: STAGE_REGISTRY["sft"].call(cfg))
    ckpts = RunDir(root).sft / "checkpoints"
    record = json.loads((ckpts / OWNER_FILE).read_text())
    assert record["num_processes"] == 1
    (ckpts / OWNER_FILE).write_text(json.dumps({**record, "num_processes": 2}))  # as a 2-process launch leaves it
    with pytest.raises(ConfigError, match=r"^SFT: the interrupted run's checkpoints were trained with 2 process\(es\), this launch has 1: "
                       r"launch it with 2 to resume them, or pass --no-resume to start over$"):
        STAGE_REGISTRY["sft"].call(cfg)
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]  # kept for that launch
    assert json.loads((ckpts / OWNER_FILE).read_text())["num_processes"] == 2


def test_the_owner_record_keeps_the_number_of_processes_and_an_older_one_means_one(tmp_path):
    folder = tmp_path / "ckpts"
    assert resumed_processes(folder, "fp1", resume=True) is None  # nothing there
    (folder / "checkpoint-5").mkdir(parents=True)
    prepare_checkpoint_dir(folder, "fp1", resume=True, num_processes=4)
    (folder / "checkpoint-5").mkdir()
    assert resumed_processes(folder, "fp1", resume=True) == 4
    assert resumed_processes(folder, "fp2", resume=True) is None and resumed_processes(folder, "fp1", resume=False) is None  # discarded
    (folder / OWNER_FILE).write_text(json.dumps({"fingerprint": "fp1"}))  # written before the count was kept: one process
    assert resumed_processes(folder, "fp1", resume=True) == 1
    assert process_change(1, 1) is None and process_change(None, 2) is None
    assert process_change(4, 2) == ("the interrupted run's checkpoints were trained with 4 process(es), this launch has 2: "
                                    "launch it with 4 to resume them, or pass --no-resume to start over")


def test_checkpoints_of_a_copied_run_directory_are_said_to_be_made_elsewhere(tmp_path):
    """Found by probing: after `cp -a` of an interrupted run, `conrec sft` in the copy said its checkpoints were
    discarded as "made with other settings or inputs"; the settings and inputs were the same, the path was not."""
    folder = tmp_path / "ckpts"
    (folder / "checkpoint-5").mkdir(parents=True)
    prepare_checkpoint_dir(folder, "fp1:inputs:/runs/a/sft/model", resume=True)
    (folder / "checkpoint-5").mkdir()
    moved = "made in another directory: the run directory was copied or moved, and checkpoints are tied to their path"
    assert discard_reason(folder, "fp1:inputs:/runs/b/sft/model", True, place="/runs/b/sft/model") == moved
    assert discard_reason(folder, "fp2:inputs:/runs/b/sft/model", True, place="/runs/b/sft/model") == "made with other settings or inputs"
    assert discard_reason(folder, "fp1:inputs:/runs/a/sft/model", True, place="/runs/a/sft/model") is None


def test_incomplete_checkpoints_are_skipped_and_removed(tmp_path):
    for step, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "trainer_state.json").write_text("{}")
        if complete:
            (d / COMPLETE_FILE).write_text("{}")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{trunc")  # marked, but its state is broken
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    shutil.rmtree(tmp_path / "checkpoint-2")
    assert last_complete_checkpoint(tmp_path) is None


def test_a_run_whose_only_checkpoints_are_incomplete_says_it_starts_from_step_0(tmp_path):
    """SFT and GRPO say it in one line (restart_note); a resume, or no checkpoint at all, says nothing of it."""
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    found, incomplete = newest_complete_checkpoint(tmp_path)
    assert found is None and incomplete == ["checkpoint-4", "checkpoint-2"] and not any(tmp_path.iterdir())
    assert restart_note(found, incomplete) == ("the earlier run's checkpoint-4 and checkpoint-2 were not completely written "
                                               "(the run was stopped during a save) and cannot be resumed: training starts from step 0")
    assert restart_note(tmp_path / "checkpoint-2", ["checkpoint-4"]) is None and restart_note(None, []) is None


def _stopping_cfg(root: Path):
    train = {"max_steps": 6, "batch_size": 4, "logging_steps": 1, "save_steps": 1,
             "early_stopping": {"eval_steps": 2, "patience": 5, "max_points": 8, "k": 3}}
    return load_config(
        None,
        {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 48, "train": train, "discernment_eval": 0},
         "decode": {"search": "exhaustive", "top_k": 5, "batch_size": 4}},
    )


def test_early_stopping_resumes_its_curve_and_best_weights(tmp_path, monkeypatch):
    """The stopper's curve, best weights and patience count go into each checkpoint: a run crashed
    after two valid evaluations ends with the uninterrupted run's curve, choice and weights."""
    import json

    done = {}
    for name in ("a", "b"):
        root = tmp_path / name
        write_toy_events(write_toy_run(root, n_items=32, n_users=12))  # the stopper excludes what the events say was rated
        if name == "b":
            interrupt_sft(monkeypatch, 5, lambda root=root: STAGE_REGISTRY["sft"].call(_stopping_cfg(root)))
        stats = STAGE_REGISTRY["sft"].call(_stopping_cfg(root))
        done[name] = (stats, _weights(RunDir(root).sft_model))
    (a, wa), (b, wb) = done["a"], done["b"]
    assert b["resumed_from"] == "checkpoint-4"
    assert [p["step"] for p in a["early_stopping"]["learning_curve"]] == [2, 4, 6]
    assert json.dumps(b["early_stopping"]) == json.dumps(a["early_stopping"])
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_resumed_run_reports_the_whole_runs_loss_and_its_own_token_rate(tmp_path, monkeypatch):
    """Logs every 3 steps, checkpoints every 2: the checkpoint a crash resumes from lies between two
    logs, and the resumed run must still report the uninterrupted run's mean loss over all 6 steps
    (not the mean of its own 2), and a token rate over the steps it ran itself."""
    train = {"max_steps": 6, "batch_size": 4, "logging_steps": 3, "save_steps": 2}
    done = {}
    for name in ("a", "b"):
        root = tmp_path / name
        write_toy_run(root, n_items=32, n_users=12)
        cfg = load_config(None, {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 48, "train": train}})
        if name == "b":
            interrupt_sft(monkeypatch, 5, lambda cfg=cfg: STAGE_REGISTRY["sft"].call(cfg))
        done[name] = STAGE_REGISTRY["sft"].call(cfg)
    a, b = done["a"], done["b"]
    assert b["resumed_from"] == "checkpoint-4" and b["steps"] == a["steps"] == 6
    assert a["train_loss_steps"] == b["train_loss_steps"] == 6
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
    tokens_run = 2 * 4 * b["mean_tokens_per_example"]  # steps 5 and 6, batch 4
    assert b["tokens_per_second"] * b["train_seconds"] == pytest.approx(tokens_run, rel=1e-6)


def test_the_whole_runs_loss_adds_the_logged_part_and_says_when_it_cannot():
    logged = [{"loss": 4.0, "step": 2}, {"loss": 3.0, "step": 3}, {"loss": 1.0, "step": 4}, {"eval": 0.5, "step": 4}]
    # steps 1-2 at 4.0, step 3 at 3.0, step 4 at 1.0, then steps 5-6 at 2.0
    assert whole_run_mean_loss(logged, 4, 2.0, 6) == ((4.0 * 2 + 3.0 + 1.0 + 2.0 * 2) / 6, 6)
    # logged up to step 3 only (a checkpoint from before the log at each checkpoint): only the resumed part
    assert whole_run_mean_loss(logged[:2], 4, 2.0, 6) == (2.0, 2)
    assert whole_run_mean_loss([], 0, 2.5, 6) == (2.5, 6)  # not resumed: the Trainer's mean
