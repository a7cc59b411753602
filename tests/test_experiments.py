"""Experiment variants as child runs: unchanged upstream stages are linked, the rest run in the child."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import conrec.pipeline as pipeline
from conrec.config import load_config
from conrec.experiments import evaluation_only, link_unchanged, run_child, stage_seconds
from conrec.io import read_json
from conrec.runs import STAGES, RunDir


def _parent(tmp_path: Path) -> Any:
    cfg = load_config(None, {"run_dir": str(tmp_path / "parent")})
    pipeline.run_pipeline(cfg)
    return cfg


def test_a_child_links_what_its_config_leaves_unchanged_and_runs_the_rest(tmp_path: Path, fake_stages: list[str]) -> None:
    parent = _parent(tmp_path)
    fake_stages.clear()
    child = load_config(None, {"run_dir": str(tmp_path / "child"), "grpo": {"beta": 0.1}})
    run_child(parent.run_dir, child, console=None)
    assert fake_stages == ["grpo", "eval"]  # data, sid, sft: linked, current, skipped
    root = Path(child.run_dir)
    assert [s for s in STAGES if (root / s).is_symlink()] == ["data", "sid", "sft"]
    assert (root / "sft").resolve() == (tmp_path / "parent" / "sft").resolve()
    assert not (root / "grpo").is_symlink() and RunDir(root).is_done("grpo")
    assert read_json(root / "parent.json") == {"parent": "../parent", "linked": ["data", "sid", "sft"]}
    # the parent is untouched: still finished, its fingerprints those of its own config
    assert all(pipeline.is_current(RunDir(parent.run_dir), parent, s) for s in STAGES)
    # rerunning the child reuses everything
    fake_stages.clear()
    run_child(parent.run_dir, child, console=None)
    assert fake_stages == []
    assert stage_seconds(root, "sft") == stage_seconds(parent.run_dir, "sft") is not None


def test_a_change_upstream_stops_the_links_there(tmp_path: Path, fake_stages: list[str]) -> None:
    parent = _parent(tmp_path)
    fake_stages.clear()
    child = load_config(None, {"run_dir": str(tmp_path / "child"), "sid": {"quantizer": {"seed": 9}}})
    assert link_unchanged(parent.run_dir, child) == ["data"]
    run_child(parent.run_dir, child, console=None)
    assert fake_stages == ["sid", "sft", "grpo", "eval"]
    # a link the child's new config no longer matches is removed, so the child never writes into its parent
    same = load_config(None, {"run_dir": str(tmp_path / "child2")})
    assert link_unchanged(parent.run_dir, same) == list(STAGES)
    edited = load_config(None, {"run_dir": str(tmp_path / "child2"), "sft": {"train": {"learning_rate": 1e-3}}})
    assert link_unchanged(parent.run_dir, edited) == ["data", "sid"]
    assert not any((tmp_path / "child2" / s).is_symlink() for s in ("sft", "grpo", "eval"))
    fake_stages.clear()
    pipeline.run_pipeline(edited)
    assert fake_stages == ["sft", "grpo", "eval"]
    assert all(pipeline.is_current(RunDir(parent.run_dir), parent, s) for s in STAGES)


def test_only_the_requested_stages_are_linked_and_a_child_needs_its_own_dir(tmp_path: Path, fake_stages: list[str]) -> None:
    parent = _parent(tmp_path)
    child = load_config(None, {"run_dir": str(tmp_path / "child")})
    assert link_unchanged(parent.run_dir, child, stages=("data", "sid")) == ["data", "sid"]
    with pytest.raises(ValueError, match="own directory"):
        link_unchanged(parent.run_dir, parent)


def test_evaluation_only_scores_the_named_models_alone(tmp_path: Path) -> None:
    cfg = load_config(None, {"eval": {"context_swap": True}})
    child = evaluation_only(cfg, tmp_path / "c", ["sft"])
    assert child.run_dir == tmp_path / "c" and child.eval.models == ["sft"] and child.eval.baselines == []
    assert not child.eval.context_swap and not child.eval.slates.enabled
    assert child.sft == cfg.sft and child.eval.ks == cfg.eval.ks and child.eval.split == cfg.eval.split


def test_a_stage_run_in_a_child_never_writes_into_its_parent(tmp_path: Path, fake_stages: list[str]) -> None:
    """`conrec sft -r <child>` followed the child's link: it cleared the parent's markers and replaced
    the parent's model. Running a stage in a child detaches that stage and the later ones first."""
    import time

    parent = _parent(tmp_path)
    child = load_config(None, {"run_dir": str(tmp_path / "child")})
    assert link_unchanged(parent.run_dir, child) == list(STAGES)
    assert not Path(str((tmp_path / "child" / "sft").readlink())).is_absolute()  # relative: a copied tree keeps its own links
    before = {s: (Path(parent.run_dir) / s / "_done.json").read_bytes() for s in STAGES}
    time.sleep(1.1)  # a marker rewritten in the parent would differ in its finish time
    fake_stages.clear()
    pipeline.run_stage(child, "sft")
    assert fake_stages == ["sft"]
    root = Path(child.run_dir)
    assert [s for s in STAGES if (root / s).is_symlink()] == ["data", "sid"]
    assert read_json(root / "parent.json")["linked"] == ["data", "sid"]  # the record says what is still linked
    assert RunDir(root).is_done("sft") and not RunDir(root).is_done("grpo")
    assert {s: (Path(parent.run_dir) / s / "_done.json").read_bytes() for s in STAGES} == before
    assert all(pipeline.is_current(RunDir(parent.run_dir), parent, s) for s in STAGES)


def test_a_childs_own_stage_goes_stale_when_the_parent_rebuilds_what_it_was_built_on(tmp_path: Path, fake_stages: list[str]) -> None:
    """The child's GRPO was trained on the parent's SFT model through a link; the parent retrained SFT
    (a refreshed file, a rerun): the child's GRPO and eval must not stay "finished with this config"."""
    import time

    parent = _parent(tmp_path)
    child = load_config(None, {"run_dir": str(tmp_path / "child"), "grpo": {"beta": 0.1}})
    run_child(parent.run_dir, child, console=None)
    assert pipeline.stale_reason(RunDir(child.run_dir), child, "grpo") is None
    time.sleep(1.1)
    pipeline.run_stage(parent, "sft")  # the parent rebuilds SFT in place
    assert "built on a sft stage that was rebuilt" in (pipeline.stale_reason(RunDir(child.run_dir), child, "grpo") or "")
    fake_stages.clear()
    run_child(parent.run_dir, child, console=None)  # the parent's sft is current again: linked; the child retrains
    assert fake_stages[:1] == ["grpo"]


def test_a_childs_eval_of_a_model_gone_stale_is_stale_too_for_the_pipeline_the_cli_and_predict(
    tmp_path: Path, fake_stages: list[str]
) -> None:
    """Found by a live run: after the parent's SFT was retrained with another learning rate, the child's GRPO was stale
    (built on a rebuilt SFT) but its eval, which scored that GRPO model, was current (its GRPO record unchanged), so
    ``run_pipeline(child, stages=("eval",))`` skipped it as "finished earlier with this config" while `conrec eval`
    refused it. Staleness is transitive: every consumer now says the eval is stale, naming the earliest cause."""
    from conrec.errors import StageInputError

    parent = _parent(tmp_path)
    child = evaluation_only(load_config(None, {"run_dir": str(tmp_path / "child"), "grpo": {"beta": 0.1}}), tmp_path / "child", ["grpo"])
    run_child(parent.run_dir, child, console=None)
    root = RunDir(child.run_dir)
    assert all(pipeline.stale_reason(root, child, s) is None for s in STAGES)
    retrained = parent.model_copy(update={"sft": parent.sft.model_copy(update={"train": parent.sft.train.model_copy(update={"learning_rate": 3e-3})})})
    pipeline.run_stage(retrained, "sft")  # the parent's SFT retrained in place, with another learning rate
    assert "made with a different configuration" in (pipeline.stale_reason(root, child, "sft") or "")
    why = pipeline.stale_reason(root, child, "eval") or ""
    assert why.startswith("built on a sft stage that is not current (made with a different configuration (sft.train.learning_rate"), why
    fake_stages.clear()
    with pytest.raises(StageInputError, match=r"^eval needs the grpo stage's outputs .* not usable: built on a sft stage that was rebuilt"):
        pipeline.run_pipeline(child, stages=("eval",))  # as `conrec eval -r <child>` (run_stage) refuses it
    with pytest.raises(StageInputError, match=r"^eval needs the grpo stage's outputs"):
        pipeline.run_stage(child, "eval")
    assert fake_stages == [] and root.is_done("eval")  # refused before anything ran or was cleared
    assert root.model_problem(child, "grpo") is not None  # predict and serve refuse the GRPO model too
    assert "run `conrec sft` and the stages after it up to eval" in root.rerun_hint(child, "eval")


def test_a_stage_is_stale_with_what_it_was_built_on_in_a_run_of_its_own_too(tmp_path: Path, fake_stages: list[str]) -> None:
    """The same rule without a parent: an SFT stage rebuilt without clearing the stages after it (as a parent's is under
    a child's) leaves the GRPO model stale, and the eval that scored it (reading GRPO, not SFT) stale with it."""
    from conrec.errors import StageInputError
    from conrec.pipeline import record_finished

    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "eval": {"models": ["grpo"]}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    run.mark_done("sft")  # rebuilt in place, the later stages not cleared
    record_finished(cfg, "sft")
    assert pipeline.stale_reason(run, cfg, "sft") is None
    assert pipeline.stale_reason(run, cfg, "grpo") == "built on a sft stage that was rebuilt or removed since"
    assert pipeline.stale_reason(run, cfg, "eval") == "built on a grpo stage that is not current (built on a sft stage that was rebuilt or removed since)"
    fake_stages.clear()
    with pytest.raises(StageInputError, match=r"^eval needs the grpo stage's outputs .* not usable: built on a sft stage that was rebuilt"):
        pipeline.run_pipeline(cfg, stages=("eval",))
    pipeline.run_pipeline(cfg)  # the whole pipeline retrains GRPO and scores it again
    assert fake_stages == ["grpo", "eval"]


def test_a_copied_parents_children_name_the_copy_as_their_parent(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by a live run: ``parent.json`` held the parent's absolute path, so in a copy (``cp -a run copy``)
    `conrec ablate -r copy/ablations/grpo/<row>` said to ablate the original run, though the row's links lead into the
    copy. The parent is recorded relative to the child; an older absolute record is read through the child's links."""
    import shutil

    from conrec.ablation import refuse_child_run
    from conrec.errors import ConfigError
    from conrec.experiments import parent_of
    from conrec.io import write_json

    parent = _parent(tmp_path)
    top = Path(parent.run_dir)
    row, paper = "ablations/grpo/grpo_future", "ablations/paper"
    run_child(top, load_config(None, {"run_dir": str(top / row), "grpo": {"beta": 0.1}}), console=None)
    retrained = {"sft": {"train": {"learning_rate": 1e-3}}}  # a paper-like chain: progressive starts from alignment's SFT
    run_child(top, load_config(None, {"run_dir": str(top / paper / "alignment"), **retrained}), console=None)
    run_child(top / paper / "alignment", load_config(None, {"run_dir": str(top / paper / "progressive"), **retrained, "grpo": {"beta": 0.1}}),
              console=None)
    assert read_json(top / row / "parent.json")["parent"] == "../../.."
    assert read_json(top / paper / "progressive" / "parent.json") == {"parent": "../alignment", "linked": ["data", "sid", "sft"]}
    copy = tmp_path / "copy"
    shutil.copytree(top, copy, symlinks=True)  # as cp -a: the relative links kept
    assert parent_of(copy / row) == copy and parent_of(copy / paper / "progressive") == copy / paper / "alignment"
    (tmp_path / "alias").symlink_to(copy / row)  # the row named through a symlink to it
    assert parent_of(tmp_path / "alias") == copy.resolve()
    elsewhere = tmp_path / "other_disk" / "ablations"  # the ablations directory moved and linked back
    elsewhere.parent.mkdir()
    shutil.move(copy / "ablations", elsewhere)
    (copy / "ablations").symlink_to(elsewhere)
    assert parent_of(copy / row) == copy.resolve()
    (copy / "ablations").unlink()
    shutil.move(elsewhere, copy / "ablations")
    with pytest.raises(ConfigError) as refused:
        refuse_child_run(copy / row, "grpo")
    assert str(refused.value) == (f"{copy / row} is a child run of {copy} (a row of an ablation or a learning-curve point); "
                                  f"ablate the parent: conrec ablate -r {copy} --what grpo")
    for root in (top, copy):  # records an older conrec wrote in the original, copied with it: absolute
        for child, up in ((row, "."), (paper + "/progressive", paper + "/alignment")):
            write_json({**read_json(root / child / "parent.json"), "parent": str((top / up).resolve())}, root / child / "parent.json")
            assert parent_of(root / child).resolve() == (root / up).resolve()
    shutil.rmtree(top)  # the original moved away: the run the row's links lead into
    assert parent_of(copy / row).resolve() == copy.resolve()
    assert parent_of(tmp_path / "nowhere") is None


def test_a_parent_rebuild_during_a_childs_stage_is_refused_not_recorded_as_what_it_was_built_on(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a live run: the parent's `conrec sft` finished while the child's GRPO (holding the child's lock only)
    trained on the old SFT model; the child's GRPO was recorded as built on the new SFT run, so it stayed current and
    was served. The identities are taken at the stage's start, and a change by its end is one line, nothing finished."""
    from conrec.errors import StageInputError
    from conrec.runs import FINGERPRINT_FILE

    parent = _parent(tmp_path)
    child = load_config(None, {"run_dir": str(tmp_path / "child"), "grpo": {"beta": 0.1}})
    assert link_unchanged(parent.run_dir, child) == ["data", "sid", "sft"]
    fake = pipeline._stage_runner

    def runner(stage: str) -> Any:
        def run(section: Any, run_dir: Any, **kwargs: Any) -> Any:
            if Path(run_dir) == Path(child.run_dir):  # the child's GRPO has loaded the SFT model: the parent retrains it
                pipeline.run_stage(parent, "sft")
            return fake(stage)(section, run_dir, **kwargs)

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    root = RunDir(child.run_dir)
    with pytest.raises(StageInputError, match=r"^the sft stage \(linked from .*parent\) was rebuilt or cleared while the grpo stage ran"):
        pipeline.run_stage(child, "grpo")
    assert fake_stages[-2:] == ["sft", "grpo"]
    assert not root.is_done("grpo") and not (root.stage_dir("grpo") / FINGERPRINT_FILE).exists()
    assert pipeline.stale_reason(root, child, "grpo") == "not finished"
    monkeypatch.setattr(pipeline, "_stage_runner", fake)  # nothing rebuilt meanwhile: recorded on the new SFT run
    pipeline.run_stage(child, "grpo")
    assert pipeline.stale_reason(root, child, "grpo") is None


def test_a_stage_made_by_another_conrec_version_says_so_rather_than_naming_no_setting(tmp_path: Path, fake_stages: list[str]) -> None:
    import json

    from conrec.runs import FINGERPRINT_FILE

    parent = _parent(tmp_path)
    path = Path(parent.run_dir) / "grpo" / FINGERPRINT_FILE
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "fingerprint": "from-an-older-conrec"}))  # same section hashes, another fingerprint
    why = pipeline.stale_reason(RunDir(parent.run_dir), parent, "grpo") or ""
    assert "conrec version" in why and "sections changed" not in why


def test_a_log_with_no_point_to_evaluate_stops_before_training(tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """3 users, 30 events: train points but no test point. `conrec demo` trained for minutes and failed
    at eval ("no samples in split 'test'"); it now stops after the data stage, naming the counts."""
    from conrec.errors import StageInputError
    from conrec.io import write_json

    real = pipeline._stage_runner

    def runner(stage: str) -> Any:
        def run(section: Any, run_dir: Any, console: Any = None, **kw: Any) -> Any:
            out = real(stage)(section, run_dir, console=console, **kw)
            if stage == "data":
                write_json({"samples": {"train": 5, "valid": 1, "test": 0}}, RunDir(run_dir).data / "stats.json")
            return out

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    with pytest.raises(StageInputError, match=r"no test point to evaluate \(samples per split: \{'test': 0, 'train': 5, 'valid': 1\}\)"):
        pipeline.run_pipeline(cfg)
    assert fake_stages == ["data"]
    with pytest.raises(StageInputError, match="no test point"):  # data current now: the check still stops the rerun
        pipeline.run_pipeline(cfg)
    assert fake_stages == ["data"]
    pipeline.run_pipeline(cfg, stages=("data", "sid"))  # no eval asked for: nothing to check
    assert fake_stages == ["data", "sid"]
