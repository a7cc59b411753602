"""`conrec ablate --what paper`: each row of the ladder adds exactly one component (config level)."""

from __future__ import annotations

from conrec.ablation import PAPER_FHR20, WHAT, paper_ladder
from conrec.config import load_config, preset_path


def test_paper_ladder_adds_one_component_per_row() -> None:
    cfg = load_config(preset_path("tiny"))  # GRPO 2 + 2 steps -> round(4 / 3) = 1 step per paper stage
    rows = paper_ladder(cfg)
    assert "paper" in WHAT and [r[0] for r in rows] == list(PAPER_FHR20)
    (_, _, title, g0), (_, _, align, g1), (_, _, prog, g2), (_, _, fut, g3), (_, _, pos, g4) = rows
    assert (g0, g1, g2, g3, g4) == (False, False, True, True, True)
    # 1 -> 2: item alignment (SID -> category, discernment) switched on, nothing else
    assert title.sft.tasks.sid_to_category == 0 and title.sft.tasks.discernment == 0
    assert align.sft.tasks.sid_to_category == 0.2 and align.sft.tasks.discernment == 1.0
    assert title.sft.tasks.model_copy(update={"sid_to_category": 0.2, "discernment": 1.0}) == align.sft.tasks
    # 3: the paper's schedule, similarity reward to the next negative only
    assert [s.name for s in prog.grpo.stages] == ["recent_neg", "all_neg", "neg_pos"]
    assert all(s.steps == 1 for s in prog.grpo.stages) and prog.grpo.stages[0].neg_recent_days == 3
    r2, r3, r4 = prog.grpo.reward, fut.grpo.reward, pos.grpo.reward
    assert (r2.mode, r2.target, r2.co_negatives, r2.gamma) == ("similarity", "next", 0, 0.0)
    # 4: future negatives + Swing co-negatives as the target; 5: + the future-positive penalty
    assert (r3.target, r3.co_negatives, r3.gamma) == ("future", 5, 0.0)
    assert r4 == r3.model_copy(update={"gamma": 0.5})
    assert prog.sft == fut.sft == pos.sft == align.sft  # the GRPO rows start from the alignment SFT model


def test_ablate_on_a_run_without_a_config_refuses_instead_of_training_the_library_defaults(tmp_path):
    """It ran the whole pipeline on the defaults (MovieLens and the pretrained backbone: over an hour)."""
    from typer.testing import CliRunner

    from conrec.cli import app

    out = CliRunner().invoke(app, ["ablate", "-r", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "has no config.yaml" in out.stderr, out.output
    assert not (tmp_path / "empty").exists()


def test_the_progressive_rows_are_progressive_whatever_the_run_is() -> None:
    """Found by probing: on a run with ``grpo.progressive: false`` the "Progressive GRPO" row of ``--what grpo``
    was the run itself (one full-context stage, the same model as grpo_future) and the ladder's progressive rows
    inherited the flag."""
    from conrec.ablation import grpo_variants

    flat = load_config(preset_path("tiny"), {"grpo": {"progressive": False}})
    assert all(c.grpo.progressive for _, _, c, grpo in paper_ladder(flat) if grpo)
    rows = {name: c for name, _, c, _ in grpo_variants(flat)}
    assert rows["grpo_progressive"].grpo.progressive and not rows["grpo_future"].grpo.progressive
    assert rows["grpo_progressive"].grpo.reward.mode == "future_collab"
    from conrec.stages import stage_fingerprint

    own = load_config(preset_path("tiny"))
    row = {name: c for name, _, c, _ in grpo_variants(own)}["grpo_progressive"]
    assert own.grpo.progressive and stage_fingerprint(row, "grpo") == stage_fingerprint(own, "grpo")  # linked, not retrained


def test_an_ablation_with_grpo_rows_refuses_a_copy_bias_run_before_training(tmp_path) -> None:
    """It trained the SFT rows, then stopped at the first GRPO row and left a child config conrec rejects."""
    import pytest

    from conrec.ablation import run
    from conrec.errors import ConfigError

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "sft": {"copy_bias": {"beta": [0.5, 0.5]}},
                                            "eval": {"models": ["sft"]}})
    for what in ("grpo", "paper"):
        with pytest.raises(ConfigError, match=f"--what {what}` has GRPO rows, and GRPO cannot train a model with sft.copy_bias"):
            run(cfg, what)
    assert not (tmp_path / "run").exists()


def test_the_run_is_held_while_the_rows_run(tmp_path, monkeypatch) -> None:
    """Found by probing: the run was held only while its own stages ran, so a second ablation retrained the
    run's SFT under the first one's rows and replaced its table file."""
    import subprocess
    import sys

    import conrec.ablation as ablation

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    probe = ("import sys\nfrom conrec.run_lock import holding_run\nfrom conrec.errors import RunInUseError\n"
             "try:\n    with holding_run(sys.argv[1]):\n        print('free')\nexcept RunInUseError:\n    print('held')\n")

    def rows(cfg, what, console, started):
        out = subprocess.run([sys.executable, "-c", probe, str(cfg.run_dir)], capture_output=True, text=True, timeout=60)
        return {"probe": out.stdout.strip()}

    monkeypatch.setattr(ablation, "_run_rows", rows)
    monkeypatch.setattr(ablation, "_run_paper", lambda cfg, console, started: rows(cfg, "paper", console, started))
    assert ablation.run(cfg, "grpo") == {"probe": "held"} and ablation.run(cfg, "paper") == {"probe": "held"}
