"""Stage orchestration: skip finished stages, rerun what a config change touches, and downstream."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import conrec.pipeline as pipeline
from conrec.config import PipelineConfig, load_config
from conrec.errors import StageInputError
from conrec.runs import STAGES, RunDir
from conrec.stages import STAGE_REGISTRY, stage_fingerprint

from builders import killed_atomic_write, write_fake_outputs


def test_rerun_skips_finished_stages(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    assert fake_stages == list(STAGES)
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == []
    pipeline.run_pipeline(cfg, force=True)
    assert fake_stages == list(STAGES)


def test_run_pipeline_returns_what_the_stages_it_ran_returned(tmp_path: Path, fake_stages: list[str]) -> None:
    """The documented return value (docs/serving.md): a stage skipped as current is left out, so a rerun of a finished
    run returns {} (it was documented nowhere, and ``run_pipeline(cfg)["eval"]`` worked once, then raised KeyError)."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    assert pipeline.run_pipeline(cfg) == {s: s for s in STAGES}  # the fake runners return their stage's name
    assert pipeline.run_pipeline(cfg) == {}
    assert pipeline.run_pipeline(cfg, stages="eval", force=True) == {"eval": "eval"}
    assert pipeline.run_stage(cfg, "eval") == "eval"  # one stage runs, current or not


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


def test_the_rerun_hint_names_the_earliest_stage_that_is_not_current(tmp_path: Path, fake_stages: list[str]) -> None:
    """"run `conrec sft`" after the data had changed: sft then refused, since data had to run first."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    assert run.rerun_hint(cfg, "grpo").startswith("run `conrec grpo` with it")
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "sid": {"category_level": True}})
    assert run.rerun_hint(changed, "grpo").startswith("run `conrec sid` and the stages after it up to grpo")
    # eval reads only the LMs it is asked for: no hint to train a GRPO it does not read
    sft_only = load_config(None, {"run_dir": str(tmp_path / "run"), "eval": {"models": ["sft"]}, "sft": {"train": {"learning_rate": 1e-3}}})
    assert run.rerun_hint(sft_only, "eval").startswith("run `conrec sft` and the stages after it up to eval")
    import shutil

    shutil.rmtree(run.grpo)
    assert run.rerun_hint(changed.model_copy(update={"eval": sft_only.eval}), "eval").startswith("run `conrec sid`")
    assert RunDir(tmp_path / "none").rerun_hint(cfg, "eval").startswith("run `conrec data` and the stages after it up to eval")


def test_a_refused_compute_setting_or_a_worker_rank_leaves_the_run_as_it_was(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by probing: `conrec grpo` with compute.precision bf16 on a CPU said so in one line, after it had
    invalidated grpo and eval and rewritten config.yaml; and a distributed launch's worker rank, which does
    not hold the run, invalidated the stages of a run another process held."""
    import torch

    from conrec.errors import ConfigError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    before = (run.root / "config.yaml").read_text()
    if not torch.cuda.is_available():
        bf16 = load_config(None, {"run_dir": str(tmp_path / "run"), "compute": {"precision": "bf16"}})
        with pytest.raises(ConfigError, match="compute.precision bf16 needs a GPU"):
            pipeline.run_stage(bf16, "grpo")
        assert all(run.is_done(s) for s in STAGES) and (run.root / "config.yaml").read_text() == before
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: (_ for _ in ()).throw(SystemExit(1)))  # the launch stops
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"learning_rate": 1e-3}}})
    with pytest.raises(SystemExit):
        pipeline.run_stage(changed, "sft")
    assert all(run.is_done(s) for s in STAGES) and (run.root / "config.yaml").read_text() == before


def test_fingerprint_ignores_downstream_sections() -> None:
    a = load_config(None)
    b = load_config(None, {"eval": {"ks": [1, 2]}})
    assert stage_fingerprint(a, "sft") == stage_fingerprint(b, "sft")
    assert stage_fingerprint(a, "eval") != stage_fingerprint(b, "eval")


# --- stage integrity (issue 13.2) ---------------------------------------------------------------


def test_stage_alone_refuses_unfinished_upstream(tmp_path: Path, fake_stages: list[str]) -> None:
    """Data files left by a failed data stage (no done marker) must not feed `conrec sid`."""
    from conrec.errors import StageInputError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    write_fake_outputs(RunDir(cfg.run_dir), "data")  # files written, stage not marked done
    with pytest.raises(StageInputError, match="data stage.*not finished"):
        pipeline.run_stage(cfg, "sid")
    assert fake_stages == []


def test_an_unknown_stage_is_one_line_from_run_stage_as_from_run_pipeline(tmp_path: Path, fake_stages: list[str]) -> None:
    """`run_stage(cfg, "foo")`, public API, raised a bare ``KeyError: 'foo'``; it says what `run_pipeline` says."""
    from conrec.errors import ConfigError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    line = r"^unknown stage\(s\) \['foo'\]; the stages are data, sid, sft, grpo, eval$"
    with pytest.raises(ConfigError, match=line):
        pipeline.run_stage(cfg, "foo")
    with pytest.raises(ConfigError, match=line):
        pipeline.run_pipeline(cfg, stages=("foo",))
    assert fake_stages == [] and not (tmp_path / "run").exists()


def test_stage_alone_refuses_upstream_made_with_other_settings(tmp_path: Path, fake_stages: list[str]) -> None:
    from conrec.errors import StageInputError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    other = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"horizon_days": 3}}})
    with pytest.raises(StageInputError, match=r"made with a different configuration \(data.split.horizon_days: 7.0 -> 3.0\)"):
        pipeline.run_stage(other, "sft")


def test_stage_alone_updates_the_record_and_invalidates_downstream(tmp_path: Path, fake_stages: list[str]) -> None:
    """`conrec sft -c other.yaml` then `conrec demo`: grpo and eval must rerun from the new model."""
    from conrec.config import resolve_config_path

    run_dir = tmp_path / "run"
    cfg = load_config(None, {"run_dir": str(run_dir)})
    pipeline.run_pipeline(cfg)
    other = load_config(None, {"run_dir": str(run_dir), "sft": {"train": {"learning_rate": 1e-3}}})
    fake_stages.clear()
    pipeline.run_stage(other, "sft")
    run = RunDir(run_dir)
    assert not run.is_done("grpo") and not run.is_done("eval")
    assert pipeline.is_current(run, other, "sft")
    # the run's own config.yaml (what `conrec demo` without -c uses) is now the one sft was made with
    demo_cfg = load_config(resolve_config_path(None, run_dir))
    assert demo_cfg.sft.train.learning_rate == 1e-3
    pipeline.run_pipeline(demo_cfg)
    assert fake_stages == ["sft", "grpo", "eval"]


def test_skipped_stage_with_unreadable_output_reruns(tmp_path: Path, fake_stages: list[str]) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    run.samples.write_bytes(b"not parquet")
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == list(STAGES)
    # a truncated model file is caught the same way, without loading the weights
    model = run.sft_model / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-3])
    assert "corrupt" in (pipeline.stale_reason(run, cfg, "sft") or "")
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == ["sft", "grpo", "eval"]


def test_eval_alone_needs_lm_stages_only_when_the_run_has_them(tmp_path: Path, fake_stages: list[str]) -> None:
    from conrec.errors import StageInputError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    for stage in ("data", "sid"):
        pipeline.run_stage(cfg, stage)
    pipeline.run_stage(cfg, "eval")  # baselines only: no sft/ or grpo/ in the run
    RunDir(cfg.run_dir).sft.mkdir()  # an SFT stage started but never finished
    with pytest.raises(StageInputError, match="sft stage"):
        pipeline.run_stage(cfg, "eval")


@pytest.mark.parametrize("command", ["sid", "tokenize"])  # tokenize: the hidden alias of sid
def test_cli_sid_on_partial_data_files_exits_2(tmp_path: Path, command: str) -> None:
    from typer.testing import CliRunner

    from conrec.cli import app

    run = RunDir(tmp_path / "run")
    write_fake_outputs(run, "data")  # what a data stage that failed after writing used to leave
    res = CliRunner().invoke(app, [command, "-r", str(run.root)])
    assert res.exit_code == 2 and "not finished" in res.output.replace("\n", "")
    assert "conrec data" in res.output.replace("\n", "")
    assert not run.sid.exists()


def test_cli_help_names_the_sid_command_and_hides_the_alias() -> None:
    from typer.testing import CliRunner

    from conrec.cli import app

    out = CliRunner().invoke(app, ["--help"]).output
    assert " sid " in out and " tokenize " not in out


def test_demo_help_says_it_runs_on_the_configs_data_not_only_the_embedded_one() -> None:
    """`conrec demo --help` said "on the embedded default dataset" while the README runs `conrec demo -c my.yaml` on
    your own data."""
    from typer.testing import CliRunner

    from conrec.cli import app

    out = " ".join(CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "on the data the config names; default preset:demo, the embedded MovieLens-100K" in out, out


def test_a_copied_runs_record_never_sends_a_command_to_the_original_run(tmp_path: Path, monkeypatch) -> None:
    """Found by probing: `-c copy/config.yaml` read and wrote the run the copied record names (its run_dir kept the
    original's path), and a relative run_dir sent it to wherever the command ran; both are refused, pointing to -r."""
    import shutil

    from typer.testing import CliRunner

    from conrec.cli import app
    from conrec.config import dump_config

    original = RunDir(tmp_path / "original")
    write_fake_outputs(original, "data")
    original.mark_done("data")
    (original.root / "config.yaml").write_text(dump_config(load_config(None, {"run_dir": str(original.root)})))
    shutil.copytree(original.root, tmp_path / "copy")
    before = sorted(p.name for p in original.root.rglob("*"))
    res = CliRunner().invoke(app, ["sid", "-c", str(tmp_path / "copy" / "config.yaml")], env={"COLUMNS": "300"})
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "is the record of the run in" in out and f"pass -r {tmp_path / 'copy'}" in out, out
    assert sorted(p.name for p in original.root.rglob("*")) == before and not original.sid.exists()
    # the run's own record, and a record given with -r, work as before (here: sid refuses the fake data in one line)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "copy" / "config.yaml").write_text(dump_config(load_config(None, {"run_dir": "copy"})))
    for args in (["-c", "copy/config.yaml"], ["-c", "copy/config.yaml", "-r", "copy"]):
        res = CliRunner().invoke(app, ["config", *args])
        assert res.exit_code == 0, res.output
    monkeypatch.chdir(tmp_path / "copy")  # the relative run_dir now names copy/copy: refused
    res = CliRunner().invoke(app, ["sid", "-c", "config.yaml"], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "is the record of the run in" in " ".join(res.output.split())


def test_cli_analyze_names_a_run_directory_that_does_not_exist(tmp_path: Path, monkeypatch) -> None:
    """A mistyped -r (or no -c/-r, so the default run_dir) read "not usable: not finished; run `conrec data` with
    this config first", with no word that the directory is not there."""
    from typer.testing import CliRunner

    from conrec.cli import app

    monkeypatch.chdir(tmp_path)
    for args, where in [(["-r", "runs/typo"], "runs/typo"), ([], "runs/demo")]:
        res = CliRunner().invoke(app, ["analyze", *args], env={"COLUMNS": "300"})
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and f"{where}: no such run directory" in out and "not finished" not in out, out
        assert not (tmp_path / where).exists()


def test_predict_score_and_serve_name_a_run_directory_that_does_not_exist(tmp_path: Path, monkeypatch) -> None:
    """Found in review: the fix above stopped at require_current, so `conrec predict -r runs/typo` and `conrec score`
    said "no model at ...; run `conrec data` and the stages after it up to grpo", and `conrec serve` "items table not
    found", the commands most often pointed at a run with -r."""
    from typer.testing import CliRunner

    from conrec.cli import app
    from conrec.serve.app import create_app_from_run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "h.json").write_text('{"negative": ["1"], "positive": []}')
    for args in (["predict", "-r", "runs/typo", "--history", "h.json"], ["score", "-r", "runs/typo", "--request", "h.json"]):
        res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
        out = " ".join(res.output.split())
        assert res.exit_code == 2 and "runs/typo: no such run directory" in out and "no model at" not in out, out
    for model in ("popular", "grpo"):
        with pytest.raises(StageInputError, match=r"runs/typo: no such run directory \(conrec serve reads"):
            create_app_from_run(PipelineConfig.model_validate({"run_dir": "runs/typo", "serve": {"model": model}}))
    assert not (tmp_path / "runs").exists()


def test_cli_analyze_on_partial_data_files_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conrec.cli import app

    run = RunDir(tmp_path / "run")
    write_fake_outputs(run, "data")
    res = CliRunner().invoke(app, ["analyze", "-r", str(run.root)])
    assert res.exit_code == 2 and "analyze needs the data stage" in res.output.replace("\n", "")
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
    assert "0.123" in out and "0.057" in out and "FHR@5" in out  # the 80-column summary: 3 decimals
    assert out.index("popularity") < out.index("grpo")  # the eval stage's order, not the JSON file's
    assert out.splitlines()[-1].endswith(f"; report: {run.report}")  # one line, though longer than 80 columns
    # a run whose eval stage just ran printed the table already: not twice
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {"eval": {}})
    buf = io.StringIO()
    pipeline.run_demo(cfg, console=Console(file=buf, width=80))
    assert "0.123" not in buf.getvalue()


def test_demo_end_lines_keep_their_paths_whole_at_any_width(tmp_path, monkeypatch) -> None:
    """`report:` and `plot:` broke their paths at the console width (rich folds long words): a real newline inside
    the path, so copy-paste and `grep report: log` gave a broken path."""
    import io

    from rich.console import Console

    import conrec.pipeline as pipeline
    from conrec.config import load_config
    from conrec.runs import RunDir

    cfg = load_config(None, {"run_dir": str(tmp_path / ("a_rather_long_directory_name_" * 3) / "run")})
    run = RunDir(cfg.run_dir)
    run.eval.mkdir(parents=True)
    (run.eval / "fhr_by_k.png").write_bytes(b"")
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: {"eval": {}})
    buf = io.StringIO()
    pipeline.run_demo(cfg, console=Console(file=buf, width=60))
    lines = buf.getvalue().splitlines()
    assert any(ln.startswith("total ") and ln.endswith(f"; report: {run.report}") for ln in lines), lines
    assert f"plot: {run.eval / 'fhr_by_k.png'}" in lines, lines


def test_docs_stage_table_is_the_registrys() -> None:
    """docs/pipeline.md shows the table generated from conrec.stages (regenerate with
    `python -m conrec.stages`)."""
    import re

    from conrec.stages import stage_table

    page = (Path(__file__).resolve().parent.parent / "docs" / "pipeline.md").read_text()
    found = re.search(r"<!-- stage-table:begin -->\n(.*?)\n<!-- stage-table:end -->", page, re.S)
    assert found is not None and found.group(1) == stage_table()


def test_registry_declares_inputs_before_the_stage_and_pipeline_follows_it(tmp_path: Path) -> None:
    from conrec.stages import STAGE_REGISTRY, STAGES

    for i, name in enumerate(STAGES):
        spec = STAGE_REGISTRY[name]
        assert set(spec.inputs) | set(spec.optional_inputs) <= set(STAGES[:i])
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    run = RunDir(cfg.run_dir)
    assert run.reads(cfg, "eval") == ["data", "sid"]  # no LM stage in this run
    run.stage_dir("sft").mkdir(parents=True)
    assert run.reads(cfg, "eval") == ["data", "sid", "sft"]
    assert run.reads(cfg, "grpo") == ["data", "sid", "sft"]


def test_every_stage_receives_only_its_declared_sections(tmp_path: Path) -> None:
    """The stage protocol: a runner gets its one section, or a bundle of exactly the sections it
    declares (never the whole config), and the run directory."""
    from dataclasses import fields

    from conrec.config import PipelineConfig
    from conrec.stages import STAGE_REGISTRY, EvalSections, GrpoSections

    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "seed": 7})
    assert STAGE_REGISTRY["data"].section_of(cfg) is cfg.data
    for spec in STAGE_REGISTRY.values():
        section = spec.section_of(cfg)
        assert not isinstance(section, PipelineConfig)
        if spec.bundle is not None:
            assert {f.name for f in fields(section)} == {k.rsplit(".", 1)[-1] for k in (*spec.sections, *spec.placement)}
    grpo = STAGE_REGISTRY["grpo"].section_of(cfg)
    assert isinstance(grpo, GrpoSections) and grpo.grpo is cfg.grpo and grpo.sft is cfg.sft and grpo.seed == 7
    ev = STAGE_REGISTRY["eval"].section_of(cfg)
    assert isinstance(ev, EvalSections) and ev.split is cfg.data.split and ev.prompt is cfg.sft.prompt


def test_pipeline_calls_a_runner_with_its_section_and_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got: dict[str, Any] = {}

    def runner(stage: str):
        def run(section: Any, run_dir: Any, console: Any = None, **kw: Any) -> None:
            got[stage] = (section, run_dir, kw)
            rd = RunDir(run_dir)
            write_fake_outputs(rd, stage)
            rd.mark_done(stage)

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    for name, spec in STAGE_REGISTRY.items():  # fake outputs: no preflight reads them
        monkeypatch.setitem(STAGE_REGISTRY, name, dataclasses.replace(spec, preflight=None))
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg, stages=("data", "sid", "sft"))
    assert got["data"][0] is cfg.data and got["data"][1] == tmp_path / "run"
    assert got["sid"][0].sid is cfg.sid and got["sid"][0].seed == cfg.seed
    assert got["sft"][0].sft is cfg.sft and got["sft"][2] == {"resume": True}


def test_fingerprint_covers_declared_sections_and_inputs_only() -> None:
    """Exactly what a stage depends on: its declared sections and, through its inputs, theirs."""
    base = load_config(None)

    def changed(overrides: dict[str, Any]) -> set[str]:
        other = load_config(None, overrides)
        return {s for s in STAGES if stage_fingerprint(other, s) != stage_fingerprint(base, s)}

    assert changed({"seed": 3}) == {"sid", "sft", "grpo", "eval"}  # the data stage does not read it
    assert changed({"data": {"simulator": {"seed": 3}}}) == set(STAGES)
    # SFT uses decode for placement only; GRPO reads only its history exclusion (a K or a beam width for predict
    # made the GRPO model stale), the eval stage decodes with all of it
    for placement_only in ({"num_beams": 3}, {"batch_size": 2}, {"search": "exhaustive"}):
        assert changed({"decode": placement_only}) == {"eval"}, placement_only
    assert changed({"decode": {"top_k": 7}}) == set()  # conrec predict's K: no stage reads it
    assert changed({"decode": {"exclude_history": False}}) == {"grpo", "eval"}
    assert changed({"sft": {"prompt": {"max_pos_items": 3}}}) == {"sft", "grpo", "eval"}
    assert changed({"grpo": {"beta": 0.1}}) == {"grpo", "eval"}
    assert changed({"serve": {"port": 1}}) == set()


def test_a_runner_computes_the_pipelines_fingerprint_from_what_it_received(tmp_path: Path, fake_stages: list[str]) -> None:
    from conrec.stages import STAGE_REGISTRY, received_fingerprint

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg, stages=("data", "sid"))
    got = received_fingerprint("sft", STAGE_REGISTRY["sft"].section_of(cfg), cfg.run_dir)
    assert got == stage_fingerprint(cfg, "sft")
    other = load_config(None, {"run_dir": str(tmp_path / "run"), "sid": {"quantizer": {"seed": 5}}})
    assert received_fingerprint("sft", STAGE_REGISTRY["sft"].section_of(other), cfg.run_dir) == got  # inputs as recorded
    assert stage_fingerprint(other, "sft") != got


def test_a_new_stage_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a stage needs no edit of the pipeline: a registry entry is run, fingerprinted, skipped
    when current and rerun when its declared section changes."""
    import conrec.runs as runs
    import conrec.stages as stages
    from conrec.stages import Stage

    extra = Stage("export", "write the served tables", ("serve",), ("eval",), ("export/table.json",), "unused:run")
    fakes = {n: dataclasses.replace(s, preflight=None) for n, s in stages.STAGE_REGISTRY.items()}  # fake outputs: no preflight reads them
    registry = {**fakes, "export": extra}
    names = tuple(registry)
    for module in (stages, runs, pipeline):
        monkeypatch.setattr(module, "STAGE_REGISTRY", registry)
        monkeypatch.setattr(module, "STAGES", names)
    calls: list[str] = []

    def runner(stage: str):
        def run(section: Any, run_dir: Any, console: Any = None, **_: Any) -> None:
            calls.append(stage)
            rd = RunDir(run_dir)
            if stage == "export":
                assert section.port == 1234  # its own section only
                (rd.root / "export").mkdir(parents=True, exist_ok=True)
                (rd.root / "export" / "table.json").write_text("{}")
            else:
                write_fake_outputs(rd, stage)
            rd.mark_done(stage)

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "serve": {"port": 1234}})
    pipeline.run_pipeline(cfg, stages=names)
    assert calls == list(names)
    calls.clear()
    pipeline.run_pipeline(cfg, stages=names)
    assert calls == []
    other = load_config(None, {"run_dir": str(tmp_path / "run"), "serve": {"port": 1234, "max_k": 70}})
    assert pipeline.stale_reason(RunDir(cfg.run_dir), other, "export") == "made with a different configuration (serve.max_k: 50 -> 70)"
    pipeline.run_pipeline(other, stages=names)
    assert calls == ["export"]


def test_ctrl_c_says_what_state_the_run_is_in_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in a stage: one line on what is kept and how to go on, the shell's 130, no traceback
    (before, only the last progress line stayed on the screen)."""
    from typer.testing import CliRunner

    import conrec.cli as cli

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_stage", interrupted)
    res = CliRunner().invoke(cli.app, ["sft", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
    text = " ".join(res.output.split())
    assert res.exit_code == 130 and "interrupted:" in text and "resume from their last checkpoint" in text
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    ("args", "interrupted_in", "said"),
    [
        (["serve", "-c", "preset:tiny"], "conrec.serve.app.run", "the server stopped before it was serving; it writes nothing"),
        (["init", "events.csv"], "conrec.init_config.init_config", "stopped before it finished; no file it writes is left half-written"),
        (["predict", "-c", "preset:tiny", "--split", "test"], "conrec.llm.inference.predict_request.check_predict_request",
         "stopped before it finished; no file it writes is left half-written"),
    ],
)
def test_ctrl_c_in_a_command_that_runs_no_stage_says_no_stage_s_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], interrupted_in: str, said: str
) -> None:
    """Found by probing: Ctrl-C while `conrec serve` loaded, or in `conrec init` or `conrec predict`, said that "a stage
    is marked done only when it finishes" and that SFT and GRPO resume from their checkpoints: they run no stage."""
    import importlib

    from typer.testing import CliRunner

    import conrec.cli as cli

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    module, name = interrupted_in.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli.app, [*args, "-r", str(tmp_path / "run")] if "-c" in args else args)
    text = " ".join(res.output.split())
    assert res.exit_code == 130 and text.startswith(f"interrupted: {said}"), res.output
    assert "stage" not in text and "checkpoint" not in text and "Traceback" not in res.output


def test_ctrl_c_with_stdout_a_dead_pipe_still_exits_130_with_its_line(tmp_path: Path) -> None:
    """Ctrl-C on ``conrec sft | tee log`` kills tee too: the cleanup's last progress line met the dead pipe, rich
    turned that into SystemExit(1), and conrec exited 1 with no "interrupted" line. Run in a child process whose
    stdout is a real pipe with its reader closed (rich points stdout at /dev/null on a broken pipe)."""
    import os
    import subprocess
    import sys

    script = f"""
import conrec.cli as cli
from conrec.progress import StageProgress

def interrupted(*_, **__):
    progress = StageProgress(console=cli.console, interval=3600)
    progress.start()
    progress.add_task("SFT", total=10, completed=3)
    try:
        raise KeyboardInterrupt
    finally:
        progress.stop()  # prints the last progress line: into the dead pipe

cli._stage = interrupted
cli.app(["sft", "-c", "preset:tiny", "-r", {str(tmp_path / "run")!r}])
"""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run([sys.executable, "-c", script], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert res.returncode == 130, res.stderr
    assert "interrupted:" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_refused_run_pipeline_call_leaves_the_run_as_it_was(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: run_pipeline rewrote config.yaml before it checked its stage names or inputs, so a
    refused call ("unknown stage", GRPO on a changed SFT) left a good run's models "made with a different
    configuration"; on a new directory it left config.yaml and the lock file behind."""
    from conrec.errors import ConfigError, StageInputError

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    before = (run.root / "config.yaml").read_text()
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"learning_rate": 1e-3}}})
    with pytest.raises(ConfigError, match=r"unknown stage\(s\) \['evl'\]"):
        pipeline.run_pipeline(changed, stages=("evl",))
    with pytest.raises(StageInputError, match="grpo needs the sft stage's outputs"):
        pipeline.run_pipeline(changed, stages=("grpo",))
    assert (run.root / "config.yaml").read_text() == before
    assert all(run.is_done(s) for s in STAGES)
    fresh = load_config(None, {"run_dir": str(tmp_path / "new")})
    with pytest.raises(StageInputError):
        pipeline.run_pipeline(fresh, stages=("grpo",))
    assert not (tmp_path / "new").exists()
    fake_stages.clear()
    pipeline.run_pipeline(cfg, stages="sid", force=True)  # one name is one stage (it read "s", "i", "d")
    assert fake_stages == ["sid"]
    # every stage current: the config is still recorded (a changed serve section, say)
    served = load_config(None, {"run_dir": str(tmp_path / "run"), "serve": {"port": 9123}})
    pipeline.run_pipeline(served)
    assert "9123" in (run.root / "config.yaml").read_text()
    # some stages asked for, all current: the run's record stays (`ablate --what paper -c OTHER` runs data and
    # SID only; recording OTHER made the run's own SFT and GRPO models stale, and the next demo retrained them)
    recorded = (run.root / "config.yaml").read_text()
    pipeline.run_pipeline(changed, stages=("data", "sid"))
    assert (run.root / "config.yaml").read_text() == recorded and all(run.is_done(s) for s in STAGES)


def test_a_run_directory_that_is_a_file_is_one_line(tmp_path: Path, fake_stages: list[str]) -> None:
    """It was a FileExistsError traceback."""
    from conrec.errors import ConfigError

    (tmp_path / "afile").write_text("x")
    for where in (tmp_path / "afile", tmp_path / "afile" / "run"):
        with pytest.raises(ConfigError, match="a folder above it is a file"):
            pipeline.run_pipeline(load_config(None, {"run_dir": str(where)}), stages=("data",))


def test_switching_the_data_engine_reuses_the_finished_stages(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: streaming or Spark (which write the same files as polars: the engine parity tests)
    reran every stage with identical results, at exactly the scale where a rerun costs most."""
    from conrec.stages import EXECUTION_SETTINGS, stage_fingerprint

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    engines = {"engine": "spark", "streaming": "on", "streaming_min_events": 5, "partition_events": 7, "spark": {"master": "local[2]"}}
    assert {f"data.{k}" for k in engines if k != "spark"} | {"data.spark.master"} <= set(EXECUTION_SETTINGS)
    # and conrec predict's K, which eval does not read (it reran eval, with an identical metrics.json)
    switched = load_config(None, {"run_dir": str(tmp_path / "run"), "data": engines, "decode": {"top_k": 7}})
    pipeline.run_pipeline(switched)
    assert fake_stages == []
    assert [stage_fingerprint(switched, s) for s in STAGES] == [stage_fingerprint(cfg, s) for s in STAGES]
    # a run recorded by the previous conrec, which hashed the real values, is current too (not rerun for the upgrade)
    import json

    from conrec.stages import _stage_fingerprint

    run = RunDir(switched.run_dir)
    for stage in STAGES:  # in order: each record names the identities of the (rewritten) records it was built on
        path = run.stage_dir(stage) / "_fingerprint.json"
        rec = json.loads(path.read_text())
        upstream = {up: run.stage_identity(up) for up in rec.get("upstream") or {}}
        path.write_text(json.dumps({**rec, "fingerprint": _stage_fingerprint(switched, stage, view=(frozenset(), False)), "upstream": upstream}))
    assert all(run.stale_reason(switched, stage) is None for stage in STAGES)
    assert _stage_fingerprint(switched, "data", view=(frozenset(), False)) != stage_fingerprint(switched, "data")
    # what the data say still counts, a Spark SQL setting too (it can change how a file is read)
    fake_stages.clear()
    pipeline.run_pipeline(load_config(None, {"run_dir": str(tmp_path / "run"), "data": {**engines, "spark": {"conf": {"spark.sql.ansi.enabled": "false"}}}}))
    assert fake_stages == list(STAGES)
    fake_stages.clear()
    pipeline.run_pipeline(load_config(None, {"run_dir": str(tmp_path / "run"), "data": {**engines, "dislike_max_rating": 1.0}}))
    assert fake_stages == list(STAGES)


def test_each_stage_records_the_torch_threads_it_ran_with(tmp_path: Path, fake_stages: list[str]) -> None:
    """With ``threads: null`` the count follows the idle cores, and another count can move a training run
    (found by probing: 1 and 2 threads gave other weights); it was recorded nowhere."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "threads": 1})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    assert all(run.fingerprint_record(s)["torch_threads"] == 1 for s in STAGES)  # type: ignore[index]


def test_a_project_copied_elsewhere_reuses_its_stages_while_the_files_are_the_same(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: the config's input paths were hashed as absolute paths, so a project directory copied or
    moved elsewhere reran every stage on the same files. The files' contents decide now."""
    import shutil

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "events.csv").write_text("user_id,item_id,ts,feedback\\nu1,i1,1,-1\\n")
    (first / "items.csv").write_text("item_id,title\\ni1,One\\n")
    shutil.copytree(first, second)

    def cfg(project: Path, **data: object):
        return load_config(None, {"run_dir": str(tmp_path / "run"), "data": {
            "source": "table", "events_path": str(project / "events.csv"), "items_path": str(project / "items.csv"), **data}})

    pipeline.run_pipeline(cfg(first))
    fake_stages.clear()
    pipeline.run_pipeline(cfg(second))  # the same files at another path
    assert fake_stages == []
    (second / "events.csv").write_text("user_id,item_id,ts,feedback\\nu1,i1,2,-1\\n")  # same size, other bytes
    run = RunDir(tmp_path / "run")
    assert "differs in content" in (run.stale_reason(cfg(second), "data") or "")
    assert "does not exist" in (run.stale_reason(cfg(tmp_path / "typo"), "data") or "")
    assert run.stale_reason(cfg(first), "data") is None  # the recorded files themselves are unchanged
    pipeline.run_pipeline(cfg(second))
    assert fake_stages == list(STAGES)


def _rewrite_records(run: RunDir, edit: Any) -> None:
    """Each stage's fingerprint record passed through ``edit(stage, record)``, in pipeline order, the identities of
    the records it was built on kept true (as an older conrec would have written them)."""
    import json

    for stage in STAGES:
        path = run.stage_dir(stage) / "_fingerprint.json"
        rec = edit(stage, json.loads(path.read_text()))
        if "upstream" in rec:
            rec["upstream"] = {up: run.stage_identity(up) for up in rec["upstream"]}
        path.write_text(json.dumps(rec))


def _as_of_revision(cfg: Any, stage: Any, revision: int) -> Any:
    """A :func:`_rewrite_records` edit: each record as the conrec whose ``stage`` was at ``revision`` wrote it."""
    from conrec.stages import TODAY, _stage_fingerprint, stage_revision

    def older(name: str, rec: dict[str, Any]) -> dict[str, Any]:
        current = stage.revision
        object.__setattr__(stage, "revision", revision)
        try:
            return {**rec, "revision": stage_revision(cfg, name), "fingerprint": _stage_fingerprint(cfg, name, view=TODAY)}
        finally:
            object.__setattr__(stage, "revision", current)

    return older


def test_outputs_of_a_stage_fixed_since_are_stale_with_everything_built_on_them(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: nothing in a fingerprint said which conrec made a stage, so SFT models trained before the
    prompt-budget fix (their prompts showed 4 of 16 dislikes) were skipped by `conrec demo`, served and reported as
    current. A stage's revision is raised with such a fix; revision 0 is not hashed (no other run goes stale)."""
    from conrec.stages import REVISIONS, STAGE_REGISTRY, TODAY, _stage_fingerprint, stage_revision

    assert all(spec.revision == max(REVISIONS.get(name, {0: ""})) for name, spec in STAGE_REGISTRY.items())
    assert STAGE_REGISTRY["sft"].revision >= 1
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    assert all(run.stale_reason(cfg, s) is None for s in STAGES)
    assert run.fingerprint_record("sft")["revision"] == stage_revision(cfg, "sft") == 1  # type: ignore[index]

    def older(stage: str, rec: dict[str, Any]) -> dict[str, Any]:  # what the conrec before the sft fix (revision 1) recorded
        sft = STAGE_REGISTRY["sft"]
        today = sft.revision
        object.__setattr__(sft, "revision", 0)
        try:
            return {**rec, "revision": stage_revision(cfg, stage), "fingerprint": _stage_fingerprint(cfg, stage, view=TODAY)}
        finally:
            object.__setattr__(sft, "revision", today)

    _rewrite_records(run, older)
    assert run.stale_reason(cfg, "data") is None and run.stale_reason(cfg, "sid") is None
    assert "older conrec whose sft stage has been fixed since (its prompts" in (run.stale_reason(cfg, "sft") or "")
    for later in ("grpo", "eval"):
        assert "built on a sft stage that an older conrec made" in (run.stale_reason(cfg, later) or "")
    assert run.model_problem(cfg, "sft") is not None
    fake_stages.clear()
    pipeline.run_pipeline(cfg)
    assert fake_stages == ["sft", "grpo", "eval"]


@pytest.mark.parametrize("before", [3, 4])
@pytest.mark.parametrize("protocol", ["global_time", "per_user"])
def test_a_data_fix_for_per_user_splits_makes_only_per_user_runs_stale(tmp_path: Path, fake_stages: list[str], protocol: str, before: int) -> None:
    """Data revision 3 (a train dislike at the second of its user's valid start, label audit of 7 December 2026) and 4
    (a valid dislike at the second of its user's test start, review of the same day) changed what per-user splits write
    only. Raised for every run, they would have rerun every global-time run (the demo, the simulator) to write the same
    files; their scope keeps those at revision 2, current, and makes older per-user runs stale with the reason, those
    made between the two fixes (``before`` 4) too. A global-time run whose config is switched to per_user since is a
    change of setting, said as one, not a fix, and so is an older per-user run whose config is switched to global_time."""
    from conrec.stages import REVISIONS

    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"protocol": protocol}}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    data = STAGE_REGISTRY["data"]
    assert data.revision == 4 and all("per_user" in REVISIONS["data"][r] for r in (3, 4))
    assert run.fingerprint_record("data")["revision"] == (4 if protocol == "per_user" else 2)  # type: ignore[index]

    _rewrite_records(run, _as_of_revision(cfg, data, before - 1))  # what the conrec before data revision `before` recorded
    fake_stages.clear()
    if protocol == "global_time":
        assert [run.stale_reason(cfg, s) for s in STAGES] == [None] * len(STAGES)
        per_user = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"protocol": "per_user"}}})
        why = run.stale_reason(per_user, "data") or ""
        assert "data.split.protocol: global_time -> per_user" in why and "fixed since" not in why
        pipeline.run_pipeline(cfg)
        assert fake_stages == []
        return
    assert run.fingerprint_record("data")["revision"] == before - 1  # type: ignore[index]
    why = run.stale_reason(cfg, "data") or ""
    # every fix since the record is named (second review of 7 December 2026: one from before revision 3 named only 4)
    if before == 4:
        assert "older conrec whose data stage has been fixed since (under data.split.protocol: per_user, a valid-share" in why
        assert "revision 3" not in why and "a train-share dislike" not in why
    else:
        assert "older conrec whose data stage has been fixed since (revision 3: under data.split.protocol: per_user, a " \
            "train-share dislike" in why
        assert "; revision 4: under data.split.protocol: per_user, a valid-share dislike" in why
        assert "revision 2" not in why
    for later in ("sid", "sft", "grpo", "eval"):
        later_why = run.stale_reason(cfg, later) or ""
        assert "built on a data stage that an older conrec made" in later_why
        assert ("revision 3: " in later_why) == (before == 3) and "a valid-share dislike" in later_why
    # switched to global_time since: the settings changed, which the fix of per-user splits does not concern (review of
    # 7 December 2026, finding 7: every stage blamed the fix); a change of settings is named first, for every stage
    global_time = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"protocol": "global_time"}}})
    for stage in STAGES:
        why = run.stale_reason(global_time, stage) or ""
        assert "data.split.protocol: per_user -> global_time" in why and "fixed since" not in why, (stage, why)
    pipeline.run_pipeline(cfg)
    assert fake_stages == list(STAGES)


@pytest.mark.parametrize("stopping", [False, True])
def test_the_sft_early_stopping_fix_makes_only_early_stopping_runs_stale(tmp_path: Path, fake_stages: list[str], stopping: bool) -> None:
    """SFT revision 2 (the SFT audit of 7 December 2026: early stopping's valid FHR@K excluded only the points'
    max_history window, not every item rated before them as the eval does) changed which checkpoint a run with
    ``sft.train.early_stopping`` keeps, and nothing else. Its scope keeps every run without it (the presets, the demo,
    the per-user and simulator recipes) at revision 1, current; an older run with it is stale with the reason, and so
    is what is built on it."""
    from conrec.config import PRESETS
    from conrec.stages import REVISIONS, fixes_text, stage_revision

    train = {"early_stopping": {"eval_steps": 1}} if stopping else {}
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": train}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    sft = STAGE_REGISTRY["sft"]
    assert sft.revision == 2 and "early_stopping" in REVISIONS["sft"][2]
    assert run.fingerprint_record("sft")["revision"] == (2 if stopping else 1)  # type: ignore[index]
    shipped = [f"preset:{p}" for p in PRESETS] + sorted(str(p) for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))
    recipes = [load_config(c) for c in shipped] + [load_config("preset:demo", {"data": {"split": {"protocol": "per_user"}}})]
    assert len(recipes) > len(PRESETS) + 1 and all(r.sft.train.early_stopping is None for r in recipes)
    assert [stage_revision(r, "sft") for r in recipes] == [1] * len(recipes)  # revision 1 before the fix: current
    assert sft.fixes_since(1, {"sft": {"train": {"early_stopping": {"eval_steps": 1}}}}) == [2]
    assert sft.fixes_since(0, {"sft": {"train": {"early_stopping": None}}}) == [1]

    _rewrite_records(run, _as_of_revision(cfg, sft, 1))  # what the conrec before sft revision 2 recorded
    fake_stages.clear()
    if not stopping:
        assert [run.stale_reason(cfg, s) for s in STAGES] == [None] * len(STAGES)
        pipeline.run_pipeline(cfg)
        assert fake_stages == []
        return
    assert run.fingerprint_record("sft")["revision"] == 1  # type: ignore[index]
    assert run.stale_reason(cfg, "data") is None and run.stale_reason(cfg, "sid") is None
    why = run.stale_reason(cfg, "sft") or ""
    assert why == f"made by an older conrec whose sft stage has been fixed since ({fixes_text('sft', [2])}); rerun it"
    assert "with sft.train.early_stopping, the valid FHR@K that chose the checkpoint" in why and "revision 1" not in why
    for later in ("grpo", "eval"):
        assert "built on a sft stage that an older conrec made, and that stage has been fixed since (with sft.train.early_stopping" \
            in (run.stale_reason(cfg, later) or "")
    pipeline.run_pipeline(cfg)
    assert fake_stages == ["sft", "grpo", "eval"]


@pytest.mark.parametrize("source", ["simulator", "movielens100k"])
def test_a_text_id_run_from_before_the_float_id_fix_stays_current(
    tmp_path: Path, fake_stages: list[str], capsys: pytest.CaptureFixture[str], source: str
) -> None:
    """Found by probing an upgrade (8 December 2026): data revision 2 (a NaN float id was an id of its own) had no scope,
    so a simulator run recorded at revision 1 was retrained from its data on, and wrote the same files, SID map and
    models. The simulator and movielens100k read no float id column: their records from before it stay current, under
    the fingerprints they recorded (a later fingerprint is unchanged). Revision 1 still applies (a record from before
    it may come from any older conrec), and a later stage that reran after its data says why."""
    from rich.console import Console

    data = STAGE_REGISTRY["data"]
    table, text_ids = {"data": {"source": "table"}}, {"data": {"source": source}}
    assert data.fixes_since(1, table) == [2] and data.fixes_since(1, text_ids) == [] and data.fixes_since(0, text_ids) == [1]
    assert data.current_revisions(table) == [2] and data.current_revisions(text_ids) == [1, 2]
    assert data.revision_for(text_ids) == 2  # what today's fingerprints hash: unchanged
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"source": source}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    today = {s: run.fingerprint_record(s)["fingerprint"] for s in STAGES}  # type: ignore[index]
    assert today == {s: stage_fingerprint(cfg, s) for s in STAGES}

    _rewrite_records(run, _as_of_revision(cfg, data, 1))  # what the conrec before data revision 2 recorded
    assert run.fingerprint_record("data")["revision"] == 1 and run.fingerprint_record("data")["fingerprint"] != today["data"]  # type: ignore[index]
    fake_stages.clear()
    assert [run.stale_reason(cfg, s) for s in STAGES] == [None] * len(STAGES)
    pipeline.run_pipeline(cfg)
    assert fake_stages == []

    _rewrite_records(run, _as_of_revision(cfg, data, 0))  # before revision 1: stale, with revision 1's reason alone
    why = run.stale_reason(cfg, "data") or ""
    assert "(reading fixes for events and items files" in why and "NaN" not in why and "revision 2" not in why
    pipeline.run_pipeline(cfg, console=Console(width=400))
    assert fake_stages == list(STAGES)
    out = capsys.readouterr().out
    assert "data: rerunning, earlier outputs made by an older conrec whose data stage has been fixed since" in out
    assert "sid: rerunning, the data stage it reads was rebuilt above" in out
    assert "sft: rerunning, the data and sid stages it reads were rebuilt above" in out
    assert "eval: rerunning, the data, sid, sft and grpo stages it reads were rebuilt above" in out


def test_a_model_from_before_revisions_is_stale_with_its_own_fix_too(
    tmp_path: Path, fake_stages: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by probing an upgrade (8 December 2026): a run made before stage revisions existed was stale with the data
    fixes alone, for every stage and in every refusal (`conrec serve`, `predict`), though its tables came out the same;
    the SFT fix that changed its models (the prompt budget) was never named. Every stage fixed since is named now, in
    one sentence that the SFT and GRPO models share, and the pipeline's line for an SFT rerun after its data says it."""
    from rich.console import Console

    from conrec.stages import REVISIONS, TODAY, _stage_fingerprint, stage_revision

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    specs = [STAGE_REGISTRY[s] for s in STAGES]
    today = [spec.revision for spec in specs]

    def before_revisions(stage: str, rec: dict[str, Any]) -> dict[str, Any]:
        for spec in specs:
            object.__setattr__(spec, "revision", 0)
        try:
            return {**rec, "revision": stage_revision(cfg, stage), "fingerprint": _stage_fingerprint(cfg, stage, view=TODAY)}
        finally:
            for spec, revision in zip(specs, today):
                object.__setattr__(spec, "revision", revision)

    _rewrite_records(run, before_revisions)
    sft_fix = REVISIONS["sft"][1]
    assert sft_fix not in (run.stale_reason(cfg, "sid") or "")
    for model in ("sft", "grpo"):
        why = run.model_problem(cfg, model) or ""
        assert why.startswith("made by an older conrec whose data and sft stages have been fixed since (data: reading fixes"), why
        assert f"; sft: {sft_fix}); rerun it" in why
    assert run.stale_reason(cfg, "sft") == run.stale_reason(cfg, "grpo")
    assert "whose data, sft and eval stages have been fixed since" in (run.stale_reason(cfg, "eval") or "")
    assert run.own_fixes(cfg, "sft") == sft_fix and run.own_fixes(cfg, "grpo") is None
    fake_stages.clear()
    pipeline.run_pipeline(cfg, console=Console(width=1000))
    assert fake_stages == list(STAGES)
    out = capsys.readouterr().out
    assert f"sft: rerunning, the data and sid stages it reads were rebuilt above, and its own stage has been fixed since ({sft_fix})" in out
    assert "grpo: rerunning, the data, sid and sft stages it reads were rebuilt above\n" in out


@pytest.mark.parametrize("protocol", ["global_time", "per_user"])
def test_the_eval_fix_line_names_what_concerns_the_run_and_does_not_say_rerun_it(
    tmp_path: Path, fake_stages: list[str], capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    """Found by probing an upgrade (8 December 2026): the demo said "eval: rerunning, earlier outputs made by an older
    conrec whose eval stage has been fixed since (where a user held several evaluated points (data.split.protocol:
    per_user) its confidence intervals ...); rerun it" on a global-split run: a refusal's advice while it reran, and a
    fix of per-user intervals that left its intervals as they were (one point per user). Eval revision 2's other fixes
    (Candidate Acc@1 and MRR, items rated before the window) concern every run, so the revision stays unscoped."""
    from rich.console import Console

    from conrec.stages import REVISIONS

    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"protocol": protocol}}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    _rewrite_records(run, _as_of_revision(cfg, STAGE_REGISTRY["eval"], 1))
    why = run.stale_reason(cfg, "eval") or ""
    per_user_part = "where a user held several evaluated points (data.split.protocol: per_user) its confidence intervals"
    assert per_user_part in REVISIONS["eval"][2] and "Candidate Acc@1 and MRR scored only the next dislike" in why
    assert (per_user_part in why) == (protocol == "per_user") and ("confidence intervals" in why) == (protocol == "per_user")
    fake_stages.clear()
    pipeline.run_pipeline(cfg, console=Console(width=1000))
    assert fake_stages == ["eval"]
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("eval: rerunning"))
    assert line.startswith("eval: rerunning, earlier outputs made by an older conrec whose eval stage has been fixed since (")
    assert "rerun it" not in line and line.endswith("now every item rated before t is)")


def test_the_fixes_since_a_record_are_every_applying_revision_after_it() -> None:
    """Found by the second review of 7 December 2026: the stale message named only the latest revision, so a
    per-user run from before data revision 3 (the larger fix) was stale with revision 4's reason alone. Every
    revision after the record that applies to its settings is named now, oldest first; a global-time record from
    before revision 2 is owed revision 2 only, never the per-user fixes."""
    from conrec.stages import fixes_text

    data = STAGE_REGISTRY["data"]
    per_user, global_time = ({"data": {"split": {"protocol": p}}} for p in ("per_user", "global_time"))
    assert data.fixes_since(2, per_user) == [3, 4] and data.fixes_since(1, per_user) == [2, 3, 4]
    assert data.fixes_since(3, per_user) == [4] and data.fixes_since(4, per_user) == []
    assert data.fixes_since(1, global_time) == [2] and data.fixes_since(2, global_time) == []
    assert data.revision_for(per_user) == 4 and data.revision_for(global_time) == 2
    text = fixes_text("data", [2, 3, 4])
    assert text.startswith("revision 2: a NaN") and "; revision 3: under data.split.protocol: per_user" in text
    assert "; revision 4: under" in text and fixes_text("data", [4]).startswith("under data.split.protocol: per_user")


def test_records_of_any_older_hashing_stay_current(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: conrec recorded for a while execution settings at stand-ins but the user's file paths as
    they were; only all-stand-in or all-real records were accepted, so such a run (own files, streaming on) reran
    every stage, said to be changed ("data changed"). Runs of that period are stale now anyway (data revision 1):
    this checks that the hashing a record used does not decide, only its settings and revisions."""
    from conrec.stages import _FIRST_EXECUTION_SETTINGS, _stage_fingerprint

    morning = (_FIRST_EXECUTION_SETTINGS, False)  # execution settings at stand-ins, the user's file paths real
    events, items = tmp_path / "events.csv", tmp_path / "items.csv"
    events.write_text("user_id,item_id,ts,feedback\nu1,i1,1,-1\n")
    items.write_text("item_id,title\ni1,One\n")
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {
        "source": "table", "events_path": str(events), "items_path": str(items), "streaming": "on"}})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    _rewrite_records(run, lambda stage, rec: {**rec, "fingerprint": _stage_fingerprint(cfg, stage, view=morning)})
    assert [run.stale_reason(cfg, s) for s in STAGES] == [None] * len(STAGES)
    assert _stage_fingerprint(cfg, "data", view=morning) != pipeline.stage_fingerprint(cfg, "data")


def test_a_section_an_older_record_lacks_is_not_called_changed(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: an older record that keyed a whole section (`decode`) was reported as "decode.exclude_history
    changed" although that setting was only absent from it."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)

    def renamed(stage: str, rec: dict[str, Any]) -> dict[str, Any]:
        if stage != "grpo":
            return rec
        sections = {("decode" if k == "decode.exclude_history" else k): v for k, v in rec["sections"].items()}
        return {**rec, "fingerprint": "an older scheme", "sections": sections}

    _rewrite_records(run, renamed)
    why = run.stale_reason(cfg, "grpo") or ""
    assert "read other settings" in why and "exclude_history" not in why
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "grpo": {"beta": 0.5}})
    assert "(grpo.beta: 0.04 -> 0.5)" in (run.stale_reason(changed, "grpo") or "")


def test_an_eval_column_the_items_lack_stops_the_pipeline_right_after_the_data_stage(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval.category.columns: [category, mood]` trained data, SID, SFT and GRPO (minutes to hours) and then failed with
    "items: missing column(s) ['mood']", naming no setting. The eval preflight now stops the run once the data stage's
    items exist, naming the key, and again on a rerun with the data current."""
    import polars as pl

    from conrec.errors import ConfigError
    from conrec.io import write_parquet

    monkeypatch.setitem(STAGE_REGISTRY, "eval", dataclasses.replace(STAGE_REGISTRY["eval"], preflight="conrec.eval.preflight:preflight"))
    real = pipeline._stage_runner

    def runner(stage: str) -> Any:
        def run(section: Any, run_dir: Any, console: Any = None, **kw: Any) -> Any:
            out = real(stage)(section, run_dir, console=console, **kw)
            if stage == "data":
                write_parquet(pl.DataFrame({"item_id": ["a"], "title": ["A"], "category": ["x"], "tone": ["y"]}), RunDir(run_dir).items)
            return out

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    cfg = load_config(None, {"run_dir": str(tmp_path / "run"), "eval": {"category": {"columns": ["category", "mood"]}}})
    needle = r"eval.category.columns: no column 'mood' in the items \(data/items.parquet, read by category, taste_exposure\); have \['item_id', 'title', 'category', 'tone'\]"
    with pytest.raises(ConfigError, match=needle):
        pipeline.run_pipeline(cfg)
    assert fake_stages == ["data"]
    with pytest.raises(ConfigError, match=needle):  # the data current: still refused before SID
        pipeline.run_pipeline(cfg)
    assert fake_stages == ["data"]
    pipeline.run_pipeline(load_config(None, {"run_dir": str(tmp_path / "run"), "eval": {"category": {"columns": ["category", "tone"]}}}))
    assert fake_stages == list(STAGES)


def test_the_eval_column_check_asks_only_for_baselines_that_read_the_columns() -> None:
    from conrec.eval.baselines import facet_readers
    from conrec.eval.config import EvalConfig
    from conrec.eval.preflight import missing_facet_columns

    cols = {"category": {"columns": ["mood"]}}
    assert missing_facet_columns(EvalConfig.model_validate({**cols, "baselines": ["popularity", "itemknn"]}), ["item_id"]) is None
    only_knn = {"personal": "itemknn", "grid": {"pop_weight": [0.5]}}
    assert facet_readers(EvalConfig.model_validate({"baselines": ["taste_exposure"], "taste_exposure": only_knn})) == []
    assert facet_readers(EvalConfig.model_validate({"baselines": ["taste_exposure", "facet_rule"]})) == ["taste_exposure", "facet_rule"]
    assert missing_facet_columns(EvalConfig.model_validate({**cols, "baselines": ["category"]}), ["mood"]) is None


def test_what_a_baseline_reads_is_said_by_its_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which baselines read eval.category.columns, and which the sid stage's text vectors, was spelled as name lists
    in four modules, so a new facet baseline got no eval preflight (the run trained SID, SFT and GRPO, then failed on
    the missing column) and no near-unique-column note (found by a contributor probe, 7 December 2026). Each place now
    asks the registry entry (BaselineSpec.reads_facets, reads_sid); popularity plays the new baseline."""
    import polars as pl

    from conrec.eval import baselines
    from conrec.eval.baselines.category import unique_column_notes
    from conrec.eval.config import EvalConfig
    from conrec.eval.preflight import missing_facet_columns
    from conrec.stages import read_inputs

    cfg = EvalConfig.model_validate({"baselines": ["popularity", "itemknn"], "models": [], "category": {"columns": ["genre"]}})
    dumped = load_config(None, {"eval": {"baselines": ["popularity", "itemknn"], "models": []}}).model_dump(mode="json")
    assert missing_facet_columns(cfg, ["item_id"]) is None and "sid" not in read_inputs("eval", dumped)
    spec = baselines.REGISTRY["popularity"]
    monkeypatch.setitem(baselines.REGISTRY, "popularity", dataclasses.replace(spec, reads_facets=True, reads_sid=True))
    assert "(data/items.parquet, read by popularity); have ['item_id']" in (missing_facet_columns(cfg, ["item_id"]) or "")
    assert "sid" in read_inputs("eval", dumped)
    assert baselines.sid_readers(cfg.baselines) == ["popularity"]
    titled = pl.DataFrame({"item_id": ["a", "b", "c"], "genre": ["x", "y", "z"]})
    (note,) = unique_column_notes(titled, cfg.category, readers=baselines.facet_readers(cfg))
    assert "`genre` has 3 distinct values" in note and "popularity" in note


def test_bookkeeping_settings_make_no_stage_stale_and_runs_recorded_before_stay_current(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: a new sft.train.logging_steps retrained SFT, GRPO and eval, and sid.encoder.cache=false every
    stage after data, though neither changes a weight or a score. Runs that the previous conrec recorded (those
    settings hashed at their real values) are not rerun for the upgrade; settings that may move numbers still count."""
    from conrec.stages import _FIRST_EXECUTION_SETTINGS, _stage_fingerprint

    def config(**extra: Any) -> PipelineConfig:
        base = {"run_dir": str(tmp_path / "run"), "sft": {"train": {"logging_steps": 7, "save_steps": 100, "save_total_limit": 3}},
                "grpo": {"save_steps": 3}, "sid": {"encoder": {"cache": False}}}
        from conrec.config import _deep_merge

        return load_config(None, _deep_merge(base, extra))

    cfg = config()
    pipeline.run_pipeline(cfg)
    fake_stages.clear()
    pipeline.run_pipeline(config(sft={"train": {"logging_steps": 1, "save_steps": 5, "save_total_limit": 2}}, grpo={"save_steps": 1},
                                 sid={"encoder": {"cache": True}}))
    assert fake_stages == []
    run = RunDir(cfg.run_dir)
    before = (_FIRST_EXECUTION_SETTINGS, True)  # what the previous conrec recorded: these settings at their values
    assert _stage_fingerprint(cfg, "sft", view=before) != pipeline.stage_fingerprint(cfg, "sft")
    _rewrite_records(run, lambda stage, rec: {**rec, "fingerprint": _stage_fingerprint(cfg, stage, view=before)})
    pipeline.run_pipeline(cfg)
    assert fake_stages == []
    pipeline.run_pipeline(config(sid={"quantizer": {"num_threads": 1}}))  # thread counts may change float sums: still counted
    assert fake_stages == ["sid", "sft", "grpo", "eval"]


def test_a_run_recorded_before_the_bookkeeping_settings_is_compared_as_it_was_hashed(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by review: on a run an older conrec recorded (bookkeeping settings hashed at their real values, here
    preset:tiny's logging_steps: 5), a new eval.seed was reported as "sft, eval changed": the record's sections were
    compared under today's hashing. A bookkeeping setting changed since such a record is a change to it (the record
    holds only hashes of the values it was made with): those stages retrain once, as docs/pipeline.md says."""
    from conrec.config import _deep_merge
    from conrec.stages import _FIRST_EXECUTION_SETTINGS, _hashed_view, _stage_fingerprint, fingerprint_sections, stage_hash

    def config(**extra: Any) -> PipelineConfig:
        return load_config(None, _deep_merge({"run_dir": str(tmp_path / "run"), "sft": {"train": {"logging_steps": 5}}}, extra))

    cfg = config()
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    before = (_FIRST_EXECUTION_SETTINGS, True)  # how the previous conrec hashed: the bookkeeping settings at their values
    dumped = cfg.model_dump(mode="json")

    def old_record(stage: str, rec: dict[str, Any]) -> dict[str, Any]:
        sections = {k: stage_hash(_hashed_view(k, _get(dumped, k), before)) for k in fingerprint_sections(stage)}
        return {**{k: v for k, v in rec.items() if k != "settings"}, "fingerprint": _stage_fingerprint(cfg, stage, view=before), "sections": sections}

    _rewrite_records(run, old_record)
    fake_stages.clear()
    seeded = config(eval={"seed": 3})
    assert [run.stale_reason(seeded, s) for s in ("sft", "grpo")] == [None, None]
    assert run.stale_reason(seeded, "eval") == "made with a different configuration (eval.seed: 0 -> 3)"
    lr = config(sft={"train": {"learning_rate": 0.5}})
    assert run.stale_reason(lr, "sft") == "made with a different configuration (sft.train.learning_rate: 0.0005 -> 0.5)"
    assert run.stale_reason(config(sft={"train": {"logging_steps": 20}}), "sft") is not None  # once, on such a run
    pipeline.run_pipeline(config(sft={"train": {"logging_steps": 20}}))
    assert fake_stages == ["sft", "grpo", "eval"]
    fake_stages.clear()
    pipeline.run_pipeline(config(sft={"train": {"logging_steps": 7}}))  # recorded today: bookkeeping retrains nothing
    assert fake_stages == []


def test_the_stale_message_names_each_setting_once(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by review: data and data.split are both fingerprinted, so a changed data.split setting was listed twice
    (and counted twice toward "and N more")."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    split = cfg.data.split
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": {"min_history": split.min_history + 2}}})
    line = f"data.split.min_history: {split.min_history} -> {split.min_history + 2}"
    assert run.stale_reason(changed, "sid") == f"made with a different configuration ({line})"
    five = {"min_history": 3, "test_frac": 0.3, "valid_frac": 0.05, "max_history": 50, "horizon_days": 3.0}
    many = load_config(None, {"run_dir": str(tmp_path / "run"), "data": {"split": five}})
    assert (run.stale_reason(many, "sid") or "").endswith("; and 1 more)")  # 5 settings, 4 shown: not "and 6 more"


def test_the_stale_message_shows_a_source_path_as_configured(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by review: a newly set model path was shown as the hashed stand-in "<a path outside the run: its files
    are compared, not its name>"; a path the record holds is shown as "a path" (its name is not recorded)."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    (tmp_path / "enc").mkdir()
    enc = load_config(None, {"run_dir": str(tmp_path / "run"), "sid": {"encoder": {"model_path": str(tmp_path / "enc")}}})
    assert run.stale_reason(enc, "sid") == f"made with a different configuration (sid.encoder.model_path: null -> {tmp_path / 'enc'})"
    pipeline.run_pipeline(enc)
    assert run.stale_reason(cfg, "sid") == "made with a different configuration (sid.encoder.model_path: a path -> null)"


def _get(dumped: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        dumped = dumped[part]
    return dumped


def test_the_stale_message_names_the_settings_that_changed(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: "made with a different configuration (sft changed)" left the user to find which of the
    section's dozens of settings it was. The record now holds the settings; a record from before them is read
    against the run's config.yaml when that holds the recorded section, else the section is named as before."""
    import json

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    lr = cfg.sft.train.learning_rate
    changed = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"learning_rate": 1e-3}, "prompt": {"variant": "timeline"}}})
    why = run.stale_reason(changed, "sft")
    assert why == f"made with a different configuration (sft.prompt.variant: segmented -> timeline; sft.train.learning_rate: {lr} -> 0.001)"
    many = load_config(None, {"run_dir": str(tmp_path / "run"), "sft": {"train": {"learning_rate": 1e-3, "epochs": 9, "warmup_ratio": 0.2,
                                                                                      "max_length": 99, "seed": 4}}})
    assert (run.stale_reason(many, "sft") or "").endswith("; and 1 more)")
    # a record from before the settings were recorded: the run's config.yaml (the config it was made with) says
    path = run.stage_dir("sft") / "_fingerprint.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "settings"}))
    assert run.stale_reason(changed, "sft") == why
    (run.root / "config.yaml").write_text("sft: {train: {epochs: 2}}\n")  # not the sft it was made with: the section only
    assert run.stale_reason(changed, "sft") == "made with a different configuration (sft changed)"


def test_a_model_cleared_by_an_earlier_stages_rerun_is_refused_for_that_reason(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by probing: after `conrec sid` was rerun, `conrec predict --model sft` refused the finished SFT model
    as "not finished"; it is refused because the SID map it was trained on was rebuilt."""
    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    pipeline.run_stage(cfg, "sid")
    why = run.model_problem(cfg, "sft")
    assert why == "`conrec sid` was run again after it finished, so the SID map it was trained on was rebuilt"
    assert run.stale_reason(cfg, "sft") == "not finished"  # the pipeline's own rule is unchanged
    assert "the SID map it was trained on was rebuilt" in (run.model_problem(cfg, "grpo") or "")
    pipeline.run_stage(cfg, "sft")  # retrained: current; grpo still names the rerun that first cleared it
    assert run.model_problem(cfg, "sft") is None
    assert "the SID map it was trained on was rebuilt" in (run.model_problem(cfg, "grpo") or "")
    pipeline.run_stage(cfg, "grpo")
    pipeline.run_stage(cfg, "sft")
    retrained = "`conrec sft` was run again after it finished, so the SFT model it was trained from was retrained"
    assert run.model_problem(cfg, "grpo") == retrained
    # the serving page's "typical case" (`conrec sft` rerun) quotes these (it quoted a message this case never prints)
    page = (Path(__file__).resolve().parent.parent / "docs" / "serving-performance.md").read_text()
    assert f"not serving the grpo model ({retrained}); serving the sft model instead" in page  # conrec.serve.app's warning
    assert f"the grpo model cannot be used with this config: {retrained}; run `conrec grpo` with it" in page
    run.clear_done("sft")  # a crash of a later sft run: no earlier rerun to blame
    run.invalidate_from("sft")
    assert run.model_problem(cfg, "sft") == "not finished"


def test_a_stage_cleared_by_a_rerun_says_so_in_refusals_the_inspector_and_a_child_run(tmp_path: Path, fake_stages: list[str]) -> None:
    """Review: only model_problem named the rerun that cleared a stage; `conrec grpo`/`conrec eval` (require_current)
    and the inspector's stale eval lists still said "not finished". And a child run whose SFT is linked to its
    parent's read the parent's note as "`conrec sid` was run again", a command nobody ran in the child."""
    from conrec.io import read_parquet
    from conrec.serve.inspect_data import Inspector

    from builders import inspector_run

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    pipeline.run_stage(cfg, "sid")
    cleared = "`conrec sid` was run again after it finished, so the SID map it was trained on was rebuilt"
    with pytest.raises(StageInputError, match=rf"needs the sft stage's outputs in .*, which are not usable: {cleared}; run `conrec sft`"):
        pipeline.run_stage(cfg, "grpo")
    assert run.stale_message(cfg, "eval") == cleared and run.stale_reason(cfg, "eval") == "not finished"
    child = RunDir(tmp_path / "child")
    child.root.mkdir()
    (child.root / "sft").symlink_to(run.stage_dir("sft"), target_is_directory=True)
    parent = run.root.resolve()
    assert child.invalidated_by("sft") == f"`conrec sid` was run again in the parent run {parent} after it finished, so the SID map it was trained on was rebuilt"

    page_cfg, _ = inspector_run(tmp_path / "page")
    page = RunDir(page_cfg.run_dir)
    page.invalidate_from("data")
    stale = Inspector.from_run(page, page_cfg, read_parquet(page.items)).stale
    assert stale == "`conrec data` was run again after it finished and has not finished since"


def test_temporaries_a_killed_write_left_are_removed_once_a_stage_holds_the_run(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found by SIGKILLing `conrec sft` during its model save: `sft/.model.XXXXXXXX.tmp` (up to a whole model) stayed
    through every later run. The stage that next holds the run removes atomic_path's temporaries in the directories
    it clears (its own and those after it), says how many in one line, and nothing else."""
    import io

    from rich.console import Console

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    # the save dies: its temporary directory stays
    killed = killed_atomic_write(run.sft_model, "    tmp.mkdir()\n    (tmp / 'model.safetensors').write_bytes(b'0' * 64)\n")
    assert killed.is_dir() and killed.name.startswith(".model.")
    predictions = run.predictions / ".sft.parquet.a1b2c3_4.tmp"
    predictions.mkdir(parents=True)
    (run.grpo / "stage_0" / ".model.zzzzzzzz.tmp" / "model").mkdir(parents=True)
    outside = tmp_path / ".outside.abcdefgh.tmp"
    outside.mkdir()
    kept = [run.data / ".events.parquet.abcdefgh.tmp",  # a stage this one reads, not clears
            run.root / ".notes.abcdefgh.tmp",  # the run directory: only its own files' temporaries go (test_stray_temporaries)
            run.sft / ".model.short.tmp", run.sft / "model.abcdefgh.tmp", run.sft / ".model.abcdefgh.tmpx"]  # other names
    for path in kept:
        path.mkdir()
    (run.sft / ".link.abcdefgh.tmp").symlink_to(outside, target_is_directory=True)
    kept += [run.sft / ".link.abcdefgh.tmp", outside]
    out = io.StringIO()
    pipeline.run_stage(cfg, "sft", console=Console(file=out, width=300))
    assert not killed.exists() and not predictions.exists() and not (run.grpo / "stage_0" / ".model.zzzzzzzz.tmp").exists()
    assert all(p.exists() for p in kept)
    lines = [line for line in out.getvalue().splitlines() if "temporary" in line]
    assert lines == ["sft: removed 3 temporary output(s) left by an interrupted write (1 in sft/, 1 in grpo/, 1 in eval/)"]
    out = io.StringIO()
    pipeline.run_stage(cfg, "sft", console=Console(file=out, width=300))
    assert "temporary" not in out.getvalue()


def test_a_write_in_progress_without_the_run_lock_survives_a_stage_start(tmp_path: Path, fake_stages: list[str]) -> None:
    """Found in review: `conrec predict --split` and `conrec score --batch` write `eval/predictions/` without the run
    lock, and a stage starting meanwhile removed their live temporary directory, so the command failed at its rename
    (FileNotFoundError) and its output was lost. The writer holds its temporary's lock; only unlocked ones go."""
    import io

    import polars as pl
    from rich.console import Console

    from conrec.io import atomic_path

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    pipeline.run_pipeline(cfg)
    run = RunDir(cfg.run_dir)
    out = io.StringIO()
    with atomic_path(run.predictions / "grpo_test.parquet") as tmp:  # predict's write, no run lock
        pl.DataFrame({"a": [1]}).write_parquet(tmp)
        pipeline.run_stage(cfg, "sft", console=Console(file=out, width=300))
        assert tmp.is_file()
    assert pl.read_parquet(run.predictions / "grpo_test.parquet")["a"].to_list() == [1]
    assert "temporary" not in out.getvalue()
    assert not [p for p in run.predictions.iterdir() if p.name.endswith(".tmp")]


def test_a_temporary_removed_before_its_writer_locks_it_is_made_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one moment a write's temporary is unlocked, between its creation and its lock: a stage removing it then makes
    the writer start another, instead of writing into a directory that is gone."""
    import tempfile

    from conrec import io as conrec_io

    made: list[str] = []
    real = tempfile.mkdtemp

    def mkdtemp_then_removed(**kwargs: Any) -> str:
        made.append(real(**kwargs))
        if len(made) == 1:
            assert conrec_io.remove_stray_temps(tmp_path) == 1  # a stage starting at that moment
        return made[-1]

    monkeypatch.setattr(conrec_io.tempfile, "mkdtemp", mkdtemp_then_removed)
    with conrec_io.atomic_path(tmp_path / "out.txt") as tmp:
        assert conrec_io.remove_stray_temps(tmp_path) == 0  # locked now
        tmp.write_text("x")
    assert (tmp_path / "out.txt").read_text() == "x" and len(made) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_filesystem_without_flock_still_writes_and_keeps_temps_it_cannot_judge(tmp_path: Path, monkeypatch) -> None:
    """Where flock fails (ENOLCK on an NFS mount without lockd, EOPNOTSUPP on some FUSE filesystems), an atomic write
    goes on unlocked instead of failing every write of the run, and the stray-temp cleanup keeps what it cannot tell
    from a write in progress instead of raising at every stage start."""
    import errno
    import fcntl

    from conrec import io

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "stage" / "table.json"
    io.write_json({"a": 1}, out)
    assert io.read_json(out) == {"a": 1}
    stray = tmp_path / "stage" / ".model.abcd1234.tmp"
    stray.mkdir()
    assert io.remove_stray_temps(tmp_path) == 0 and stray.is_dir()


def test_a_setting_added_at_its_neutral_value_leaves_every_fingerprint_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fingerprint hashes each section's whole dump, so a field added to the config, even at a default that changes
    nothing, made every existing run rerun the stages that hold it ("sft.train.x: unset -> 0"; found by an extensibility
    probe, 7 December 2026). Registered in ADDED_SETTINGS with that value, it is left out there: the runs recorded before
    it existed stay current, and any other value is a change named as one. Here sft.train.dropout plays the new field."""
    import copy

    from conrec.stages import ADDED_SETTINGS, TODAY, _dumped_fingerprint, section_as_hashed, setting_changes

    dumped = load_config(None, {}).model_dump(mode="json")
    older = copy.deepcopy(dumped)
    del older["sft"]["train"]["dropout"]  # the config as it was before the field existed
    changed = copy.deepcopy(dumped)
    changed["sft"]["train"]["dropout"] = 0.37
    stages = ("sft", "grpo", "eval")
    before = [_dumped_fingerprint(older, s, TODAY) for s in stages]
    assert all(_dumped_fingerprint(dumped, s, TODAY) != b for s, b in zip(stages, before))  # unregistered: all rerun
    monkeypatch.setitem(ADDED_SETTINGS, "sft.train.dropout", dumped["sft"]["train"]["dropout"])
    assert [_dumped_fingerprint(dumped, s, TODAY) for s in stages] == before
    assert all(_dumped_fingerprint(changed, s, TODAY) != b for s, b in zip(stages, before))
    old_view = section_as_hashed("sft", older["sft"])
    assert setting_changes("sft", old_view, section_as_hashed("sft", dumped["sft"])) == []
    assert setting_changes("sft", old_view, section_as_hashed("sft", changed["sft"])) == ["sft.train.dropout: unset -> 0.37"]


def test_every_fingerprinted_setting_is_listed_or_registered_as_added() -> None:
    """A new field in a section a stage fingerprint hashes makes every existing run rerun that stage ("<key>: unset ->
    <default>") unless it is registered in ADDED_SETTINGS, and nothing made a contributor do either (left open on
    7 December 2026). tests/fingerprinted_settings.txt lists the fingerprinted settings as they are: a setting that is
    neither listed nor registered fails here, with the choice spelled out; so does a listed setting that is gone (runs
    recorded with it rerun as well)."""
    from conrec.config import config_reference
    from conrec.stages import ADDED_SETTINGS, EXECUTION_SETTINGS, fingerprint_sections

    listing = Path(__file__).with_name("fingerprinted_settings.txt")
    listed = {line.strip() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")}
    keys = [k for k, _, _ in config_reference()]
    sections = {s for stage in STAGE_REGISTRY for s in fingerprint_sections(stage)}
    hashed = [k for k in keys if k not in EXECUTION_SETTINGS and any(k == s or k.startswith(s + ".") for s in sections)]

    def registered(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:n]) in ADDED_SETTINGS for n in range(1, len(parts) + 1))

    new = [k for k in hashed if k not in listed and not registered(k)]
    assert not new, (f"new fingerprinted setting(s) {new}: register each in conrec.stages.ADDED_SETTINGS with the value that does what "
                     "runs made without it did (they stay current; a new section, such as a baseline's eval.<name>, can be one "
                     f"entry: its whole default dump), or, where no value does, add it to {listing.name} (every existing run then "
                     "reruns the stages that hold it); docs/development.md")
    gone = sorted(listed - set(keys))
    assert not gone, (f"{gone} no longer exist: runs recorded with them rerun the stages that held them ('<key>: <value> -> unset'); "
                      f"remove them from {listing.name} to accept that")
    stale = [k for k in ADDED_SETTINGS if not any(x == k or x.startswith(k + ".") for x in keys)]
    assert not stale, f"ADDED_SETTINGS names settings or sections the config does not have: {stale}"


def test_a_new_section_registered_as_added_keeps_existing_runs_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/development.md says a new baseline's settings are one ADDED_SETTINGS entry, ``"eval.<name>"`` -> its default
    dump, but the check above refused a section ("names settings the config does not have"), and registering each of
    its settings instead left ``<name>: {}`` in the hashed eval section, so every existing run's eval reran (found by a
    contributor probe, 7 December 2026). Both ways now pass the check and keep the eval fingerprint of a run made before
    the section existed; eval.facet_rule plays the new section."""
    import copy

    from conrec.stages import ADDED_SETTINGS, TODAY, _dumped_fingerprint

    dumped = load_config(None, {}).model_dump(mode="json")
    older = copy.deepcopy(dumped)
    del older["eval"]["facet_rule"]  # the config as it was before the section existed
    before = _dumped_fingerprint(older, "eval", TODAY)
    assert _dumped_fingerprint(dumped, "eval", TODAY) != before  # unregistered: the eval reruns
    section = dumped["eval"]["facet_rule"]
    for entries in ({"eval.facet_rule": section}, {f"eval.facet_rule.{k}": v for k, v in section.items()}):
        with monkeypatch.context() as m:
            for key, value in entries.items():
                m.setitem(ADDED_SETTINGS, key, value)
            test_every_fingerprinted_setting_is_listed_or_registered_as_added()
            assert _dumped_fingerprint(dumped, "eval", TODAY) == before, entries
    monkeypatch.setitem(ADDED_SETTINGS, "eval.no_such_baseline", {})
    with pytest.raises(AssertionError, match=r"does not have: \['eval.no_such_baseline'\]"):
        test_every_fingerprinted_setting_is_listed_or_registered_as_added()


def test_a_mapping_left_empty_by_added_settings_hashes_as_runs_made_before_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping the mappings that ADDED_SETTINGS leave empty (above) had two edges (review of 7 December 2026): with
    every setting of data.spark registered, the data fingerprint raised KeyError: 'spark' where data.spark.master's
    stand-in was put back; and a mapping setting that dumped ``{}`` in older runs (data.feedback_labels) was dropped
    once a key registered inside it was removed, so it no longer hashed as they recorded it. A stand-in whose mapping
    is gone is now passed over, and a mapping setting is kept."""
    import copy

    from conrec.stages import ADDED_SETTINGS, TODAY, _dumped_fingerprint

    dumped = load_config(None, {}).model_dump(mode="json")
    without_spark = copy.deepcopy(dumped)
    del without_spark["data"]["spark"]  # the config as it was before data.spark existed
    with monkeypatch.context() as m:
        m.setitem(ADDED_SETTINGS, "data.spark.master", None)
        m.setitem(ADDED_SETTINGS, "data.spark.conf", {})
        assert _dumped_fingerprint(dumped, "data", TODAY) == _dumped_fingerprint(without_spark, "data", TODAY)
    before = _dumped_fingerprint(dumped, "data", TODAY)  # feedback_labels: {}
    labelled = copy.deepcopy(dumped)
    labelled["data"]["feedback_labels"] = {"skip": 0}  # a default entry added later, registered at its value
    monkeypatch.setitem(ADDED_SETTINGS, "data.feedback_labels.skip", 0)
    assert _dumped_fingerprint(labelled, "data", TODAY) == before


def test_under_a_launcher_a_stage_that_runs_in_one_process_is_refused_on_a_worker_before_the_run_is_touched(
    tmp_path: Path, fake_stages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by probing: under torchrun every process ran the data, SID and eval stages, the workers without the run
    lock (writing what the main process read); a library caller's launch reached them too. SFT and GRPO run in every
    process, as before (test_a_refused_compute_setting_or_a_worker_rank_leaves_the_run_as_it_was). Found in review:
    refusing rank 0 too broke a user's torchrun script that runs the data stage on rank 0 only (it holds the lock) and a
    scheduler's job that exports RANK=0 WORLD_SIZE=2; only the other ranks are refused."""
    from conrec.run_lock import LaunchedError, holding_run

    cfg = load_config(None, {"run_dir": str(tmp_path / "run")})
    monkeypatch.setenv("WORLD_SIZE", "2")
    for env in ({"RANK": "1"}, {"LOCAL_RANK": "1"}):
        monkeypatch.delenv("RANK", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for call in (lambda: pipeline.run_stage(cfg, "data"), lambda: pipeline.run_stage(cfg, "eval"),
                     lambda: pipeline.run_pipeline(cfg), lambda: pipeline.run_pipeline(cfg, stages=("sid", "sft"))):
            with pytest.raises(LaunchedError, match=r"(the|each of the) (data|eval|sid)[a-z ,]* stages? runs in one process, and this is process 1 of 2"):
                call()
        with pytest.raises(LaunchedError, match="a command that writes run directory .* runs in one process"), holding_run(cfg.run_dir):
            pass
        assert fake_stages == [] and not Path(cfg.run_dir).exists()
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("RANK", "0")  # the main rank: it holds the run, so it may run a single-process stage
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # under torchrun itself too (a user's own script)
    pipeline.run_stage(cfg, "data")
    pipeline.run_pipeline(cfg, stages=("sid",))
    with holding_run(cfg.run_dir):
        pass
    assert fake_stages == ["data", "sid"]


def test_ctrl_c_under_a_launcher_is_said_by_the_main_process_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: Ctrl-C reaches every process of ``torchrun ... conrec sft``, and each printed its own
    ``interrupted:`` line; errors were already said once. A worker rank now says nothing and exits 130 like the main."""
    from typer.testing import CliRunner

    import conrec.cli as cli
    import conrec.pipeline

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(conrec.pipeline, "run_stage", interrupted)
    for rank, says in (("0", True), ("1", False)):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        res = CliRunner().invoke(cli.app, ["sft", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
        assert res.exit_code == 130 and ("interrupted:" in res.output) is says, (rank, res.output)
