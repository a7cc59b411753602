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


def test_demo_rerun_on_a_finished_run_prints_the_saved_results_and_report_path(tmp_path, monkeypatch) -> None:
    """Issue 14: a rerun that skips every stage still ends with the results table and the report path."""
    import io

    from rich.console import Console

    import conrec.pipeline as pipeline
    from conrec.config import load_config
    from conrec.io import write_json
    from conrec.runs import RunDir

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    run = RunDir(cfg.run_dir)
    write_json({"popularity": {"FHR@5": 0.1234, "HR@5": 0.5, "NDCG@5": 0.25, "Coverage@5": 0.1, "invalid_rate": 0.0},
                "grpo": {"FHR@5": 0.0567, "HR@5": 0.2, "NDCG@5": 0.1, "Coverage@5": 0.2, "invalid_rate": 0.0}},
               run.eval / "metrics.json")
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {})  # every stage skipped
    buf = io.StringIO()
    pipeline.run_demo(cfg, console=Console(file=buf, width=80))
    out = buf.getvalue()
    assert "0.1234" in out and "0.0567" in out and "FHR@5" in out
    assert out.index("popularity") < out.index("grpo")  # the eval stage's order, not the JSON file's
    assert str(run.report) in out
    # a run whose eval stage just ran printed the table already: not twice
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {"eval": {}})
    buf = io.StringIO()
    pipeline.run_demo(cfg, console=Console(file=buf, width=80))
    assert "0.1234" not in buf.getvalue()
