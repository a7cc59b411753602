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
