"""The eval stage's fingerprint holds the ``sft`` and ``grpo`` settings only of the LMs ``eval.models`` scores.

Found by the session-40 experiments: every eval was fingerprinted with both LM stages, so the ablations' baselines
child (``eval.models: []``) re-tuned every baseline after a GRPO learning-rate change, and the SFT-only rows decoded
again, each "made with a different configuration (grpo.learning_rate: ...)", a setting that eval never read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conrec.config import PipelineConfig, load_config, preset_path
from conrec.pipeline import run_pipeline
from conrec.runs import RunDir
from conrec.stages import _VIEWS, STAGE_REGISTRY, STAGES, _fingerprint, _get, _stage_fingerprint, stage_fingerprint

PRESETS = ("demo", "full", "tiny", "smollm2", "gemma3")


def _with(cfg: PipelineConfig, **sections: dict[str, Any]) -> PipelineConfig:
    """``cfg`` with some settings changed, validated as a config file would be."""
    from conrec.config import _deep_merge

    return load_config(None, _deep_merge(cfg.model_dump(mode="json"), sections))


def _every_input_fingerprint(dumped: dict[str, Any], stage: str, view: Any) -> str:
    """The fingerprint as conrec computed it before this fix: every optional input hashed, whatever ``eval.models``."""
    spec = STAGE_REGISTRY[stage]
    inputs = {u: _every_input_fingerprint(dumped, u, view) for u in (*spec.inputs, *spec.optional_inputs)}
    return _fingerprint(stage, {k: _get(dumped, k) for k in spec.sections}, inputs, view)


@pytest.mark.parametrize("name", [None, *PRESETS])
def test_the_default_and_preset_fingerprints_and_records_are_unchanged(name: str | None) -> None:
    """The hard constraint of the fix: where ``eval.models`` names every LM (the default and every preset), each
    stage's fingerprint, under every view a conrec recorded, and the sections a record holds are what they were,
    so no existing run of them goes stale. (Checked against main's own code when the fix was made, too.)"""
    from conrec.stages import fingerprint_sections, section_settings

    cfg = load_config(preset_path(name) if name else None)
    assert set(cfg.eval.models) == {"sft", "grpo"}
    dumped = cfg.model_dump(mode="json")
    for stage in STAGES:
        for view in _VIEWS:
            assert _stage_fingerprint(cfg, stage, view) == _every_input_fingerprint(dumped, stage, view)
        assert list(section_settings(cfg, stage)) == fingerprint_sections(stage)  # the full closure, as before


def test_an_eval_hashes_the_lm_settings_only_of_the_lms_it_scores() -> None:
    cfg = load_config(preset_path("tiny"))
    lr = {"grpo": {"learning_rate": cfg.grpo.learning_rate * 2}}
    steps = {"sft": {"train": {"max_steps": cfg.sft.train.max_steps + 1}}}
    for models, sft_counts, grpo_counts in (([], False, False), (["sft"], True, False), (["grpo"], True, True),
                                            (["sft", "grpo"], True, True)):
        base = _with(cfg, eval={"models": models})
        assert (stage_fingerprint(_with(base, **steps), "eval") != stage_fingerprint(base, "eval")) == sft_counts, models
        assert (stage_fingerprint(_with(base, **lr), "eval") != stage_fingerprint(base, "eval")) == grpo_counts, models
    # the eval's own sections always count
    base = _with(cfg, eval={"models": []})
    assert stage_fingerprint(_with(base, eval={"seed": 5}), "eval") != stage_fingerprint(base, "eval")


def test_an_eval_of_no_lm_stays_current_after_an_lm_change(tmp_path: Path, fake_stages: list[str]) -> None:
    """The ablations' baselines child: data, SID and an eval of no LM. A GRPO or SFT change leaves it current (it
    re-tuned every baseline); an eval of the SFT model alone stays current after a GRPO change, not after an SFT one."""
    from conrec.stages import section_settings

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    assert not {"sft", "grpo"} & set(section_settings(cfg, "eval"))  # the record holds what the eval reads
    lr = _with(cfg, grpo={"learning_rate": cfg.grpo.learning_rate * 2})
    assert run.stale_reason(lr, "eval") is None
    assert run.stale_reason(_with(cfg, sft={"train": {"max_steps": 21}}), "eval") is None
    fake_stages.clear()
    run_pipeline(lr, stages=("data", "sid", "eval"))
    assert fake_stages == []

    only_sft = _with(cfg, eval={"models": ["sft"]})
    run_pipeline(only_sft)
    assert run.stale_reason(_with(only_sft, grpo={"learning_rate": cfg.grpo.learning_rate * 2}), "eval") is None
    assert run.stale_reason(_with(only_sft, sft={"train": {"max_steps": 21}}), "eval") == (
        "made with a different configuration (sft.train.max_steps: 20 -> 21)")


def test_an_eval_recorded_before_the_fix_stays_current(tmp_path: Path, fake_stages: list[str]) -> None:
    """An eval of fewer LMs recorded by the previous conrec (every LM's settings hashed) is current while nothing it
    hashed changed; once a setting it no longer reads changed, it reruns once, without blaming that setting."""
    import json

    from conrec.stages import FINGERPRINT_FILE

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    path = run.stage_dir("eval") / FINGERPRINT_FILE
    rec = json.loads(path.read_text())
    old = _every_input_fingerprint(cfg.model_dump(mode="json"), "eval", _VIEWS[0])
    assert old != rec["fingerprint"]  # the two schemes differ for this config
    path.write_text(json.dumps({**rec, "fingerprint": old}))
    assert run.stale_reason(cfg, "eval") is None
    why = run.stale_reason(_with(cfg, grpo={"learning_rate": cfg.grpo.learning_rate * 2}), "eval")
    assert why is not None and "grpo" not in why


@pytest.mark.parametrize("models", [[], ["sft"]])
def test_an_lm_file_change_stales_an_eval_only_if_it_scores_that_lm(tmp_path: Path, fake_stages: list[str], models: list[str]) -> None:
    """The files outside the run that an LM stage read (a local backbone) count for an eval only when it scores
    that LM."""
    import json

    from conrec.source_files import snapshot
    from conrec.stages import FINGERPRINT_FILE

    backbone = tmp_path / "backbone.bin"
    backbone.write_text("weights")
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": models}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    path = run.stage_dir("sft") / FINGERPRINT_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "source_files": snapshot({"sft.model.path": backbone})}))
    backbone.write_text("other weights")
    assert run.stale_reason(cfg, "sft") is not None
    assert (run.stale_reason(cfg, "eval") is None) == (models == [])


def test_an_eval_of_baselines_that_read_no_sid_output_needs_no_sid_stage(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found in review: `conrec eval` with only baselines (``eval.models: []``) refused on a run with only its data
    ("needs the sid stage's outputs"), though no baseline but ``content`` reads them, and a sid rerun cleared it. The
    sid stage is read (and must be current) only for an LM or the content baseline."""
    from conrec.errors import StageInputError
    from conrec.pipeline import run_stage

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    assert "content" not in cfg.eval.baselines
    run_pipeline(cfg, stages=("data",))
    run_stage(cfg, "eval")
    run = RunDir(cfg.run_dir)
    assert fake_stages == ["data", "eval"] and run.stale_reason(cfg, "eval") is None
    run_stage(cfg, "sid")  # a sid run leaves it current: it read nothing of the sid stage
    assert run.stale_reason(cfg, "eval") is None
    for reads_sid in (_with(cfg, eval={"baselines": [*cfg.eval.baselines, "content"]}), _with(cfg, eval={"models": ["sft"]})):
        empty = tmp_path / f"only_data_{len(fake_stages)}"
        moved = reads_sid.model_copy(update={"run_dir": empty})
        run_pipeline(moved, stages=("data",))
        with pytest.raises(StageInputError, match="needs the sid stage's outputs"):
            run_stage(moved, "eval")


def _as_recorded_before_the_sid_rule(cfg: PipelineConfig, run: RunDir) -> None:
    """Rewrite ``run``'s eval record (of baselines only, no ``content``) as the previous conrec wrote it: the sid stage
    hashed into its fingerprint, its ``upstream`` listing the sid stage, and the sid settings among its sections."""
    from conrec.stages import FINGERPRINT_FILE, TODAY, section_as_hashed, setting_of, stage_hash

    path = run.stage_dir("eval") / FINGERPRINT_FILE
    rec = json.loads(path.read_text())
    sid = section_as_hashed("sid", setting_of(cfg.model_dump(mode="json"), "sid"))
    path.write_text(json.dumps({
        **rec,
        "fingerprint": _stage_fingerprint(cfg, "eval", TODAY, reads="inputs"),
        "upstream": {**rec["upstream"], "sid": run.stage_identity("sid")},
        "sections": {**rec["sections"], "sid": stage_hash(sid)},
        "settings": {**rec["settings"], "sid": sid},
    }))


def test_a_baselines_eval_recorded_with_the_sid_stage_stays_current(tmp_path: Path, fake_stages: list[str]) -> None:
    """An eval of no LM and no content baseline recorded by the previous conrec (the sid stage hashed, and listed in
    its ``upstream``) is current while the sid settings are the same."""
    from conrec.stages import FINGERPRINT_FILE

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    now = json.loads((run.stage_dir("eval") / FINGERPRINT_FILE).read_text())
    assert set(now["upstream"]) == {"data"}  # today's record: the sid stage is not read
    _as_recorded_before_the_sid_rule(cfg, run)
    old = json.loads((run.stage_dir("eval") / FINGERPRINT_FILE).read_text())
    assert old["fingerprint"] != now["fingerprint"] and set(old["upstream"]) == {"data", "sid"}  # the two rules differ
    assert run.stale_reason(cfg, "eval") is None


def test_a_baselines_eval_recorded_with_the_sid_stage_is_cleared_by_a_sid_rerun(
    tmp_path: Path, fake_stages: list[str]
) -> None:
    """Such an old record is still cleared by a sid rerun (its ``upstream`` lists the sid stage), and goes stale when
    the sid settings change (its fingerprint hashed them). Guards behaviour that was already right."""
    from conrec.pipeline import run_stage

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    _as_recorded_before_the_sid_rule(cfg, run)
    assert run.stale_reason(cfg, "eval") is None
    assert run.stale_reason(_with(cfg, sid={"category_level": not cfg.sid.category_level}), "eval") is not None
    run_stage(cfg, "sid")
    assert run.stale_reason(cfg, "eval") == "not finished"


def test_an_eval_with_the_content_baseline_is_cleared_by_a_sid_rerun(tmp_path: Path, fake_stages: list[str]) -> None:
    """The content baseline reads the sid stage's text vectors, so a sid rerun clears the eval, also when the rerun's
    config does not select content (the record's ``upstream`` lists the sid stage). Guards behaviour that was already
    right: only the baselines-only direction (stays current) was tested."""
    from conrec.pipeline import run_stage

    base = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    cfg = _with(base, eval={"baselines": [*base.eval.baselines, "content"]})
    for rerun_with in (cfg, base):
        run_pipeline(cfg)
        run = RunDir(cfg.run_dir)
        assert run.stale_reason(cfg, "eval") is None
        run_stage(rerun_with, "sid")
        assert run.stale_reason(cfg, "eval") == "not finished"


def test_a_baselines_eval_recorded_with_the_sid_stage_names_a_changed_sid_setting(
    tmp_path: Path, fake_stages: list[str]
) -> None:
    """Found in review: such a record, after a sid setting changed, was stale (rightly: its fingerprint hashed them) but
    said "made by a conrec version whose stage read other settings (the config is unchanged)", because only the
    sections the stage reads now (no sid) were compared; it now names the setting."""
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run"), "eval": {"models": []}})
    run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    _as_recorded_before_the_sid_rule(cfg, run)
    assert run.stale_reason(cfg, "eval") is None
    level = cfg.sid.category_level
    other = _with(cfg, sid={"category_level": not level})
    assert run.stale_reason(other, "eval") == (
        f"made with a different configuration (sid.category_level: {json.dumps(level)} -> {json.dumps(not level)})"
    )
