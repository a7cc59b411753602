"""Crash-safe checkpoints (issue 13.2): SFT resumes from its last complete checkpoint, incomplete
checkpoints are skipped, and a resumed run ends with the same weights as an uninterrupted one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conrec.config import load_config
from conrec.llm.model.checkpoints import (
    COMPLETE_FILE,
    last_complete_checkpoint,
    prepare_checkpoint_dir,
)
from conrec.llm.model.toy import write_toy_run
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import crash_sft_after_step


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
    crash_sft_after_step(monkeypatch, 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        STAGE_REGISTRY["sft"].call(cfg)
    monkeypatch.undo()
    ckpts = RunDir(root).sft / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # a kill while checkpoint-2 was being written: weights there, completion marker not yet
    (ckpts / "checkpoint-2" / COMPLETE_FILE).unlink()
    stats = STAGE_REGISTRY["sft"].call(cfg)
    assert stats["resumed_from"] == "checkpoint-1" and stats["steps"] == 4
    got = _weights(RunDir(root).sft_model)
    assert got.keys() == uninterrupted.keys()
    assert all(torch.equal(got[k], uninterrupted[k]) for k in got)
    assert not ckpts.exists()  # deleted once the model is written


def test_no_resume_or_changed_config_discards_checkpoints(tmp_path):
    folder = tmp_path / "ckpts"
    (folder / "checkpoint-5").mkdir(parents=True)
    assert not prepare_checkpoint_dir(folder, "fp1", resume=True)  # no owner record yet
    (folder / "checkpoint-5").mkdir()
    assert prepare_checkpoint_dir(folder, "fp1", resume=True) and (folder / "checkpoint-5").exists()
    assert not prepare_checkpoint_dir(folder, "fp1", resume=False) and not (folder / "checkpoint-5").exists()
    (folder / "checkpoint-5").mkdir()
    assert not prepare_checkpoint_dir(folder, "fp2", resume=True) and not (folder / "checkpoint-5").exists()


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
