"""Stage orchestration: skip finished stages, rerun what a config change touches, and downstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import conrec.pipeline as pipeline
from conrec.config import load_config
from conrec.runs import STAGES, RunDir


@pytest.fixture()
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def runner(stage: str):
        def run(cfg: Any, console: Any = None, **_: Any) -> str:
            calls.append(stage)
            RunDir(cfg.run_dir).mark_done(stage)
            return stage

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    return calls


def test_rerun_skips_finished_stages(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    assert fake_stages == list(STAGES)
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == []
    pipeline.run_pipeline(cfg, force=True)
    assert fake_stages == list(STAGES)


def test_config_change_reruns_that_stage_and_downstream_only(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"learning_rate": 1e-3}}})
    pipeline.run_pipeline(changed)
    assert fake_stages == ["sft", "grpo", "eval"]


def test_unfinished_stage_reruns_with_downstream(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    RunDir(cfg.run_dir).clear_done("sid")
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == ["sid", "sft", "grpo", "eval"]


def test_fingerprint_ignores_downstream_sections() -> None:
    a = load_config(None)
    b = load_config(None, {"eval": {"ks": [1, 2]}})
    assert pipeline.stage_fingerprint(a, "sft") == pipeline.stage_fingerprint(b, "sft")
    assert pipeline.stage_fingerprint(a, "eval") != pipeline.stage_fingerprint(b, "eval")
