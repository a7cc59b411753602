"""Corrupt model files give one StageInputError line (issue 13.3), in every stage that loads a model."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from conrec.cli import app
from conrec.config import load_config
from conrec.errors import StageInputError
from conrec.llm.inference.predict import Predictor
from conrec.llm.model.model_files import verify_model_dir
from conrec.llm.model.toy import write_toy_run
from conrec.runs import RunDir
from conrec.stages import STAGE_REGISTRY

from builders import record_current


@pytest.fixture(scope="module")
def run_with_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    write_toy_run(root, n_items=32, n_users=12)
    cfg = load_config(
        None,
        {"run_dir": str(root), "sft": {"model": {"tiny": {"seed": 3}}, "train": {"max_steps": 1, "batch_size": 4}, "max_samples": 16},
         "decode": {"num_beams": 4, "top_k": 3, "batch_size": 4}},
    )
    STAGE_REGISTRY["sft"].call(cfg)
    record_current(cfg, "sft")
    return cfg


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _break_json(path):
    path.write_text(path.read_text()[:-40])


CORRUPTIONS = {
    "model.safetensors": _truncate,
    "tokenizer.json": _break_json,
    "config.json": _break_json,
}


@pytest.fixture(params=sorted(CORRUPTIONS))
def corrupt_run(request, run_with_model, tmp_path):
    """A copy of the run whose SFT model has one corrupt file."""
    cfg = run_with_model.model_copy(update={"run_dir": tmp_path / "run"})
    shutil.copytree(run_with_model.run_dir, cfg.run_dir)
    CORRUPTIONS[request.param](RunDir(cfg.run_dir).sft_model / request.param)
    return cfg, request.param


def test_intact_model_dir_passes(run_with_model):
    verify_model_dir(RunDir(run_with_model.run_dir).sft_model)


def test_corrupt_file_is_a_stage_input_error_naming_it(corrupt_run):
    cfg, name = corrupt_run
    with pytest.raises(StageInputError, match=name.replace(".", r"\.")):
        Predictor.from_run(cfg, model="sft")


def test_grpo_on_a_corrupt_sft_model_is_one_line(corrupt_run):
    cfg, name = corrupt_run
    with pytest.raises(StageInputError, match=name.replace(".", r"\.")):
        STAGE_REGISTRY["grpo"].call(cfg)


def test_cli_predict_on_a_corrupt_model_exits_2_with_one_line(corrupt_run, tmp_path):
    cfg, name = corrupt_run
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps({"neg": ["i1"], "pos": ["i2"]}))
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(cfg.model_dump_json())
    res = CliRunner().invoke(app, ["predict", "-c", str(cfg_path), "--model", "sft", "--history", str(hist)])
    assert res.exit_code == 2, res.output
    flat = res.output.replace("\n", "")  # rich wraps the one line at the terminal width
    assert "Traceback" not in flat and name in flat
    assert flat.startswith("error:")


def test_a_file_that_passed_is_not_parsed_again_until_it_changes(run_with_model, tmp_path, monkeypatch):
    """The 3.5 MB tokenizer.json was parsed at every stage start, model load and output check (0.1 s each);
    a file rewritten since it passed, even to the same size, is checked again."""
    import conrec.llm.model.model_files as model_files

    model = tmp_path / "model"
    shutil.copytree(RunDir(run_with_model.run_dir).sft_model, model)
    parsed: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(model_files.json, "loads", lambda b, *a, **k: parsed.append(len(b)) or real_loads(b, *a, **k))
    verify_model_dir(model)
    first = len(parsed)
    assert first >= 3  # config.json, tokenizer.json, ..., the safetensors header
    verify_model_dir(model)
    assert len(parsed) == first  # unchanged: nothing parsed again
    text = (model / "tokenizer.json").read_text()
    (model / "tokenizer.json").write_text(text[:-1] + " ")  # same size, no longer JSON
    with pytest.raises(StageInputError, match=r"tokenizer\.json is not valid JSON"):
        verify_model_dir(model)
