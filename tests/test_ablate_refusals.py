"""What `conrec demo` and `conrec ablate` refuse before any stage runs (session-40 experiments)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conrec.cli import app

LEAKY = {"data": {"split": {"train_until": "test"}}, "eval": {"split": "valid"}}
"""Scoring on valid an LM trained on the valid period's labels (SplitConfig.trains_on_labels_of)."""


def _config(tmp_path: Path, extra: dict[str, object]) -> Path:
    """preset:tiny with ``extra`` as a config file."""
    from conrec.config import dump_config, load_config, preset_path

    path = tmp_path / "leaky.yaml"
    path.write_text(dump_config(load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), **extra})))
    return path


@pytest.mark.parametrize("command", [["demo"], ["ablate", "--what", "grpo"], ["ablate", "--what", "prompts"],
                                     ["ablate", "--what", "paper"]])
def test_scoring_on_valid_an_lm_trained_on_its_labels_is_refused_before_any_stage(
    tmp_path: Path, fake_stages: list[str], command: list[str]
) -> None:
    """The eval stage refused it only after data, SID, SFT and GRPO had trained (78 s on tiny, the whole SFT and GRPO
    at the demo's size). The config still loads: serve and predict with train_until: test are legitimate."""
    path = _config(tmp_path, LEAKY)
    assert CliRunner().invoke(app, ["config", "-c", str(path)]).exit_code == 0
    out = CliRunner().invoke(app, [*command, "-c", str(path)])
    assert out.exit_code == 2, out.output
    assert out.stderr.startswith("error: eval.split is valid but data.split.train_until is test: the LM is trained on the "
                                 "valid period's labels; ") and out.stderr.count("\n") == 1, out.stderr
    assert fake_stages == [] and not (tmp_path / "run").exists()


def test_a_demo_that_scores_no_lm_on_valid_is_not_refused(tmp_path: Path, fake_stages: list[str]) -> None:
    """Baselines alone on valid after a refit up to the test cut-off score nothing trained on their labels."""
    path = _config(tmp_path, {"data": LEAKY["data"], "eval": {**LEAKY["eval"], "models": []}})
    out = CliRunner().invoke(app, ["demo", "-c", str(path)])
    assert out.exit_code == 0, out.output
    assert fake_stages == ["data", "sid", "sft", "grpo", "eval"]


def test_ablating_a_child_run_is_refused_naming_the_parent(tmp_path: Path, fake_stages: list[str]) -> None:
    """`conrec ablate -r <a row of an ablation>` trained nested rows under the row, against its evaluation-only
    config (no baselines: every "Δ vs best baseline" was "–"), reading the parent's stages without holding it."""
    from conrec.config import dump_config, load_config, preset_path

    parent = tmp_path / "run"
    child = parent / "ablations" / "grpo" / "sft"
    child.mkdir(parents=True)
    (child / "parent.json").write_text(f'{{"parent": "{parent}", "linked": ["data", "sid", "sft"]}}')
    (child / "config.yaml").write_text(dump_config(load_config(preset_path("tiny"), {"run_dir": str(child)})))
    before = sorted(p.name for p in child.iterdir())
    out = CliRunner().invoke(app, ["ablate", "-r", str(child), "--what", "grpo"])
    assert out.exit_code == 2, out.output
    assert out.stderr == (f"error: {child} is a child run of {parent} (a row of an ablation or a learning-curve point); "
                          f"ablate the parent: conrec ablate -r {parent} --what grpo\n"), out.stderr
    assert fake_stages == [] and sorted(p.name for p in child.iterdir()) == before


def test_run_pipeline_itself_refuses_before_any_stage(tmp_path: Path, fake_stages: list[str]) -> None:
    """The Python API's pipeline (what `conrec demo` calls) refuses it too, not only the CLI commands: a direct
    ``run_pipeline`` call trained every stage before the eval stage said no."""
    from conrec.config import load_config
    from conrec.errors import ConfigError
    from conrec.pipeline import run_pipeline

    cfg = load_config(_config(tmp_path, LEAKY))
    with pytest.raises(ConfigError, match="eval.split is valid but data.split.train_until is test"):
        run_pipeline(cfg)
    assert fake_stages == [] and not (tmp_path / "run").exists()
    run_pipeline(cfg, ("data", "sid"))  # no eval among the stages: nothing is scored
    assert fake_stages == ["data", "sid"]
