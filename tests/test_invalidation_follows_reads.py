"""A stage's rerun clears, and the pipeline reruns, only the later stages that read it (for the config), as the eval
fingerprint already does: an eval of the SFT model alone does not read GRPO."""

from __future__ import annotations

from pathlib import Path

import pytest

import conrec.pipeline as pipeline
from conrec.config import PipelineConfig, load_config
from conrec.runs import RunDir


def _cfg(tmp_path: Path, **settings: object) -> PipelineConfig:
    return load_config(None, {"run_dir": str(tmp_path / "run"), **settings})


def test_a_grpo_rerun_keeps_an_eval_of_the_sft_model_alone(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by the session-41 probes: after `conrec grpo` was run again, `conrec demo` ran the eval stage again with
    ``eval.models: [sft]``, though that eval reads no GRPO model (its fingerprint and record leave GRPO out)."""
    cfg = _cfg(tmp_path, eval={"models": ["sft"]})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    eval_identity = run.stage_identity("eval")
    fake_stages.clear()
    pipeline.run_stage(cfg, "grpo")  # `conrec grpo`
    assert run.is_done("eval") and run.stage_identity("eval") == eval_identity and run.invalidated_by("eval") is None
    assert run.report.read_text() == "report"  # not cleared: no stale line
    pipeline.run_pipeline(cfg)  # `conrec demo`
    assert fake_stages == ["grpo"]
    pipeline.run_pipeline(_cfg(tmp_path, eval={"models": ["sft"]}, grpo={"learning_rate": 2e-5}))  # a GRPO setting changed
    assert fake_stages == ["grpo", "grpo"]
    assert run.stage_identity("eval") == eval_identity


@pytest.mark.parametrize("models", [["sft", "grpo"], ["grpo"]])
def test_a_grpo_rerun_still_clears_an_eval_that_scores_grpo(tmp_path: Path, fake_stages: list[str], models: list[str]) -> None:
    cfg = _cfg(tmp_path, eval={"models": models})
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    pipeline.run_stage(cfg, "grpo")
    run = RunDir(cfg.run_dir)
    assert not run.is_done("eval") and run.invalidated_by("eval") is not None
    pipeline.run_pipeline(cfg)
    assert fake_stages == ["grpo", "eval"]


def test_an_eval_made_with_grpo_is_cleared_by_a_grpo_rerun_whose_config_scores_sft_only(tmp_path: Path, fake_stages: list[str]) -> None:
    """The finished eval's own record decides too: it read GRPO, so it goes whatever the rerun's config asks."""
    pipeline.run_pipeline(_cfg(tmp_path))
    pipeline.run_stage(_cfg(tmp_path, eval={"models": ["sft"]}), "grpo")
    assert not RunDir(tmp_path / "run").is_done("eval")


def test_an_sft_rerun_clears_an_eval_of_the_sft_model_and_grpo(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = _cfg(tmp_path, eval={"models": ["sft"]})
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    pipeline.run_pipeline(_cfg(tmp_path, eval={"models": ["sft"]}, sft={"train": {"learning_rate": 1e-3}}))
    assert fake_stages == ["sft", "grpo", "eval"]


def test_a_baselines_only_eval_survives_an_sft_rerun(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = _cfg(tmp_path, eval={"models": []})
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    pipeline.run_pipeline(_cfg(tmp_path, eval={"models": []}, sft={"train": {"learning_rate": 1e-3}}))
    assert fake_stages == ["sft", "grpo"]


def test_an_upstream_rerun_marks_the_eval_report_stale_even_when_interrupted(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by probing: after `conrec sft --no-resume` was stopped with Ctrl-C on a finished run, ``eval/_invalidated.json``
    said ``by: sft`` but ``eval/report.md`` read as current, while ``ablations/grpo.md`` got a stale first line. The
    report gets the same line (once), and the eval that writes it again leaves it out."""
    from conrec.runs import STALE_MARK

    cfg = _cfg(tmp_path)
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    fake = pipeline._stage_runner

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: interrupted)
    for _ in range(2):  # `conrec sft`, Ctrl-C, twice
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_stage(cfg, "sft")
    report = run.report.read_text()
    assert report == (f"{STALE_MARK} `conrec sft` was run again after this report was written, so its numbers may not describe "
                      "the run's models and data any more: run `conrec eval` (or `conrec demo`) to write it again.\n\nreport")
    assert run.invalidated_by("eval") is not None
    monkeypatch.setattr(pipeline, "_stage_runner", fake)
    fake_stages.clear()
    pipeline.run_pipeline(cfg)  # `conrec demo`
    assert fake_stages == ["sft", "grpo", "eval"] and run.report.read_text() == "report"


def test_a_report_that_cannot_be_marked_stale_never_leaves_the_clear_half_done(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found in review: the stale line was written before the eval's done marker was removed, so a report that could not
    be rewritten (a full disk) aborted the clear after sft, leaving eval done on an SFT being retrained. The stages are
    cleared first; the line is a courtesy, said in a warning when it cannot be written."""
    import errno

    import conrec.runs as runs

    run = RunDir(tmp_path / "run")
    for s in ("data", "sid", "sft", "grpo", "eval"):
        (run.root / s).mkdir(parents=True)
        run.mark_done(s)
    run.report.write_text("report", encoding="utf-8")

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runs, "write_text", full)
        assert run.invalidate_from("sft") == ["sft", "grpo", "eval"]
    assert not any(run.is_done(s) for s in ("sft", "grpo", "eval")) and "`conrec sft` was run again" in str(run.invalidated_by("eval"))
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("warning: eval/report.md could not be marked stale (No space left on device)"), err
    assert run.report.read_text() == "report"


def test_the_stale_line_reads_the_report_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Found in review: the report (written as UTF-8) was read in the locale's encoding; under `LC_ALL=C` without UTF-8
    mode that raised UnicodeDecodeError half-way through the clear."""
    import os
    import subprocess
    import sys

    script = """
import sys
from pathlib import Path
from conrec.runs import RunDir, STALE_MARK
run = RunDir(Path(sys.argv[1]))
for s in ("data", "sid", "sft", "grpo", "eval"):
    (run.root / s).mkdir(parents=True)
    run.mark_done(s)
run.report.write_text("# Report \\u2014 95 % CI \\u00b10.1, user \\u00f1\\n", encoding="utf-8")
run.invalidate_from("sft")
text = run.report.read_text(encoding="utf-8")
print(text.startswith(STALE_MARK), text.endswith("\\n\\n# Report \\u2014 95 % CI \\u00b10.1, user \\u00f1\\n"), run.is_done("eval"))
"""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable, "-X", "utf8=0", "-c", script, str(tmp_path / "run")], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["True", "True", "False"], proc.stdout + proc.stderr[-2000:]
