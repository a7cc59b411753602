"""sft.train.ema_decay: an exponential moving average of the weights is what SFT scores and saves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conrec.config import load_config
from conrec.errors import ConfigError
from conrec.llm.model.toy import write_toy_run
from conrec.llm.training.ema import EMA_FILE, EmaWeights
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import interrupt_sft


def _one_weight(value: float) -> torch.nn.Linear:
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(value)
    return lin


def test_average_follows_the_formula_with_warm_up_and_is_applied_only_inside_the_block():
    lin = _one_weight(0.0)
    ema = EmaWeights(lin, 0.9)
    expected = 0.0
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        with torch.no_grad():
            lin.weight.fill_(value)
        ema.update(lin)
        d = min(0.9, 1.0 - 1.0 / (step + 1))  # step 1 averages half-half, later steps decay at 0.9
        expected = d * expected + (1.0 - d) * value
        assert ema.shadow["weight"].item() == pytest.approx(expected)
    with ema.applied(lin):
        assert lin.weight.item() == pytest.approx(expected)
    assert lin.weight.item() == 4.0  # the raw weights are back after the block


def test_saved_average_loads_into_a_fresh_one_and_a_different_model_is_refused(tmp_path: Path):
    lin = _one_weight(2.0)
    ema = EmaWeights(lin, 0.5)
    ema.update(_one_weight(4.0))
    ema.save(tmp_path / EMA_FILE)
    again = EmaWeights(_one_weight(0.0), 0.5)
    again.load(tmp_path / EMA_FILE)
    assert again.updates == 1 and again.shadow["weight"].item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="do not match"):
        EmaWeights(torch.nn.Linear(1, 1), 0.5).load(tmp_path / EMA_FILE)


def test_decay_is_validated_by_the_config():
    assert load_config(None, {"sft": {"train": {"ema_decay": 0.99}}}).sft.train.ema_decay == 0.99
    with pytest.raises(ConfigError, match="ema_decay"):
        load_config(None, {"sft": {"train": {"ema_decay": 1.0}}})


def _cfg(root: Path, ema: float | None):
    train = {"max_steps": 4, "batch_size": 4, "logging_steps": 1, "save_steps": 1, "learning_rate": 0.01, "ema_decay": ema}
    return load_config(None, {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "max_samples": 48, "train": train}})


def _train(root: Path, ema: float | None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not root.exists():
        write_toy_run(root, n_items=32, n_users=12)
    STAGE_REGISTRY["sft"].call(_cfg(root, ema))
    return load_file(str(RunDir(root).sft_model / "model.safetensors"))


def test_sft_saves_the_average_and_a_resumed_run_continues_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = _train(tmp_path / "raw", None)
    averaged = _train(tmp_path / "ema", 0.5)
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)  # the average, not the last weights, is saved

    root = tmp_path / "resumed"
    interrupt_sft(monkeypatch, 3, lambda: _train(root, 0.5))
    assert (RunDir(root).sft / "checkpoints" / "checkpoint-2" / EMA_FILE).is_file()
    resumed = _train(root, 0.5)
    assert all(torch.equal(resumed[k], averaged[k]) for k in averaged)


def test_a_crash_after_the_last_step_resumes_to_the_same_average(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The SFT model is written, then the stage crashes before it is marked done. The rerun must not
    resume from a checkpoint of the last step: the Trainer then trains one step past ``max_steps``,
    and that step moves the average (at a learning rate of 0 at the end of the linear schedule)."""
    import conrec.llm.training.discernment as discernment

    averaged = _train(tmp_path / "ema", 0.5)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash after the last step")

    monkeypatch.setattr(discernment, "measure", crash)
    root = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="after the last step"):
        _train(root, 0.5)
    monkeypatch.undo()
    assert not (RunDir(root).sft / "checkpoints" / "checkpoint-4").exists()
    resumed = _train(root, 0.5)
    assert json.loads((RunDir(root).sft / "stats.json").read_text())["steps"] == 4
    assert all(torch.equal(resumed[k], averaged[k]) for k in averaged)
