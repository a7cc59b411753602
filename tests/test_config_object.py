"""A config object edited after loading (the notebook way) is checked again by the entry points that take one."""

from __future__ import annotations

from pathlib import Path

import pytest

import conrec.pipeline as pipeline
from conrec.config import load_config, validated
from conrec.errors import ConfigError
from conrec.llm.inference.predict import Predictor
from conrec.runs import RunDir

MAX_HISTORY_ERROR = "invalid config: data.split.max_history: Input should be greater than or equal to 1"


def _edited(tmp_path: Path):
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    cfg.data.split.max_history = 0  # pydantic does not check an assignment
    return cfg


def test_run_pipeline_refuses_an_edited_config_as_load_config_refuses_the_file(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by using the library: the data stage ran with ``max_history: 0`` and recorded it in the run's
    ``config.yaml``, which every CLI command then refused ("invalid config in .../config.yaml"), so the run was lost
    to the CLI. Now: the one line load_config gives for the same value, and nothing written."""
    cfg = _edited(tmp_path)
    with pytest.raises(ConfigError) as err:
        pipeline.run_pipeline(cfg, stages="data")
    assert str(err.value) == MAX_HISTORY_ERROR
    with pytest.raises(ConfigError, match="data.split.max_history"):
        load_config(None, {"data": {"split": {"max_history": 0}}})  # the same refusal, from a file's or overrides' value
    with pytest.raises(ConfigError) as err:
        pipeline.run_stage(cfg, "data")
    assert str(err.value) == MAX_HISTORY_ERROR
    assert fake_stages == [] and not Path(cfg.run_dir).exists()


def test_a_cross_field_rule_is_checked_too(tmp_path: Path, fake_stages: list[str]) -> None:
    """Model validators run at construction only: the split's ``valid_frac + test_frac < 1`` was skipped, and polars
    failed 14 frames deep in the data stage."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    cfg.data.split.valid_frac = 0.9
    with pytest.raises(ConfigError, match=r"^invalid config: data.split: .*valid_frac \+ test_frac must be < 1"):
        pipeline.run_pipeline(cfg)
    assert fake_stages == [] and not Path(cfg.run_dir).exists()


def test_predictor_from_run_checks_the_config_before_any_model_is_looked_for(tmp_path: Path) -> None:
    cfg = _edited(tmp_path)
    with pytest.raises(ConfigError) as err:
        Predictor.from_run(cfg, "sft")
    assert str(err.value) == MAX_HISTORY_ERROR


def test_a_valid_config_runs_as_it_is(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config("preset:demo", {"run_dir": str(tmp_path / "run")})
    assert validated(cfg) is cfg  # unchanged: the stages get the caller's own sections
    as_text = cfg.model_copy(update={"run_dir": str(tmp_path / "run")})  # pydantic does not check a copy's update either
    assert validated(as_text).run_dir == tmp_path / "run" and isinstance(validated(as_text).run_dir, Path)
    cfg.sft.train.max_steps = 3  # a valid edit is kept
    pipeline.run_pipeline(cfg, stages=["data", "sid"])
    assert fake_stages == ["data", "sid"]
    assert load_config(RunDir(cfg.run_dir).root / "config.yaml").sft.train.max_steps == 3
    with pytest.raises(ConfigError, match="expected a PipelineConfig"):
        validated({"run_dir": "x"})  # type: ignore[arg-type]
