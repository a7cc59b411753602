"""Config loading and atomic output: the failure modes a user actually hits."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from conrec.config import PipelineConfig, dump_config, load_config
from conrec.errors import ConfigError, StageInputError
from conrec.io import atomic_path, read_json, read_parquet, write_json, write_parquet


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg.data.split.horizon_days == 7
    assert cfg.sid.quantizer.levels == 3 and cfg.sid.quantizer.codebook_size == 256


def test_sections_override_and_roundtrip(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("run_dir: somewhere\ndata:\n  source: simulator\n  split:\n    horizon_days: 3\n")
    cfg = load_config(p)
    assert cfg.data.source == "simulator" and cfg.data.split.horizon_days == 3
    assert cfg.run_dir == Path("somewhere")
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


def test_cli_style_overrides_win(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("run_dir: a\n")
    assert load_config(p, {"run_dir": "b"}).run_dir == Path("b")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("data:\n  sourse: simulator\n", "data.sourse"),  # typo must not be ignored
        ("data:\n  source: nosuch\n", "data.source"),
        ("data:\n  split:\n    valid_frac: 0.6\n    test_frac: 0.5\n", "valid_frac + test_frac"),
        ("sid:\n  quantizer:\n    levels: 0\n", "sid.quantizer.levels"),
        ("- a\n- b\n", "must be a mapping"),
        ("data: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_configs_name_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert needle in str(err.value)


def test_invalid_yaml_is_one_line_naming_line_and_column(tmp_path: Path) -> None:
    """str(yaml error) is five lines (context, snippet, caret): the config error printed them all."""
    p = tmp_path / "broken.yaml"
    p.write_text("a: [\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg and "line 2, column 1" in msg and "expected the node content" in msg, msg


@pytest.mark.parametrize(("written", "meant"), [("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")])
def test_streaming_on_and_off_read_as_written_although_yaml_makes_them_booleans(tmp_path: Path, written: str, meant: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(f"data:\n  streaming: {written}\n")  # the docs' spelling: YAML 1.1 reads bare on/off as true/false
    cfg = load_config(p)
    assert cfg.data.streaming == meant
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == PipelineConfig()


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.parquet"
    write_parquet(pl.DataFrame({"a": [1]}), target)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    # the old file is intact and no temp litter remains
    assert pl.read_parquet(target)["a"].to_list() == [1]
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.parquet"]


def test_atomic_directory_replace(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for version in ("v1", "v2"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text(version)
    assert (target / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_corrupt_and_missing_inputs_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(StageInputError, match="not a readable Parquet"):
        read_parquet(bad, "events")
    with pytest.raises(StageInputError, match="events not found"):
        read_parquet(tmp_path / "missing.parquet", "events")
    j = tmp_path / "x.json"
    j.write_text("{oops")
    with pytest.raises(StageInputError, match="not valid JSON"):
        read_json(j)
    write_json({"a": 1}, j)
    assert read_json(j) == {"a": 1}


def test_docs_configuration_reference_is_exactly_the_generated_table():
    """docs/configuration.md between its markers is `conrec config --reference` (paste that output to update it)."""
    import re
    from pathlib import Path

    from conrec.config import config_reference_markdown

    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    found = re.search(r"<!-- config-reference:begin -->\n(.*?)\n<!-- config-reference:end -->", page, re.S)
    assert found is not None, "docs/configuration.md lost its config-reference markers"
    assert found.group(1) == config_reference_markdown(), ("docs/configuration.md is stale: put the output of `conrec config --reference | cat` between its "
                                                              "<!-- config-reference:begin --> and <!-- config-reference:end --> lines; a new field: also register it in "
                                                              "conrec.stages.ADDED_SETTINGS, or existing runs rerun its stage (docs/development.md)")
    # optional sections (null unless set) list their settings too: early stopping's were nowhere
    for key in ("sft.train.early_stopping.patience", "sft.train.early_stopping.eval_steps", "sft.train.lora.r", "sft.model.tiny.hidden_size"):
        assert f"| `{key}` |" in found.group(1), key


def test_presets_load_and_demo_uses_a_tiny_offline_backbone():
    from conrec.config import PRESETS, load_config, preset_path

    for name in PRESETS:
        load_config(preset_path(name))
    assert load_config(preset_path("demo")).sft.model.tiny is not None
    full = load_config(preset_path("full"))
    assert full.sft.model.tiny is not None and full.sft.model.sid_init == "encoder"


# --- relative paths (issue 14): resolved against the config file, not the current directory


def test_relative_input_paths_resolve_against_the_config_files_directory(tmp_path: Path, monkeypatch) -> None:
    cfg_dir = tmp_path / "project" / "configs"
    cfg_dir.mkdir(parents=True)
    p = cfg_dir / "c.yaml"
    p.write_text(
        "run_dir: runs/mine\n"
        "data: {source: table, events_path: ../logs/events.csv, items_path: /abs/items.csv}\n"
        "sft: {model: {path: models/lm}}\n"
        "sid: {encoder: {cache_dir: ~/emb}}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(p)
    assert cfg.data.events_path == cfg_dir / "../logs/events.csv"
    assert cfg.data.items_path == Path("/abs/items.csv")
    assert cfg.sft.model.path == cfg_dir / "models/lm"
    assert cfg.sid.encoder.cache_dir == Path("~/emb").expanduser()
    assert cfg.run_dir == Path("runs/mine")  # an output location: relative to where you run
    # the run's own config.yaml (written with absolute inputs) reloads to the same paths from anywhere
    dumped = tmp_path / "dumped" / "config.yaml"
    dumped.parent.mkdir()
    dumped.write_text(dump_config(cfg))
    assert load_config(dumped) == cfg


def test_override_paths_resolve_against_the_current_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text("data: {source: table, events_path: in_file.csv}\n")
    cfg = load_config(p, {"data": {"items_path": "items.csv"}})
    assert cfg.data.events_path == tmp_path / "sub" / "in_file.csv"
    assert cfg.data.items_path == tmp_path / "items.csv"


def test_not_found_messages_name_the_absolute_path(tmp_path: Path, monkeypatch) -> None:
    from conrec.data.stage import run as data_run
    from conrec.errors import DataValidationError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=str(tmp_path / "missing.yaml")):
        load_config("missing.yaml")
    with pytest.raises(StageInputError, match=str(tmp_path / "nothing.parquet")):
        read_parquet("nothing.parquet")
    p = tmp_path / "cfgs" / "c.yaml"
    p.parent.mkdir()
    p.write_text("run_dir: r\ndata: {source: table, events_path: ev.csv, items_path: it.csv}\n")
    with pytest.raises(DataValidationError, match=str(tmp_path / "cfgs" / "ev.csv")):
        cfg = load_config(p)
        data_run(cfg.data, cfg.run_dir, console=None)


def test_simulated_data_gives_the_facet_baselines_every_facet_axis():
    """With data.source simulator the category rule and taste x exposure read category, tone and setting (the
    simulator's facet axes) unless the config names its columns; other sources keep the category column."""
    import yaml

    from conrec.config import dump_config, load_config
    from conrec.data.simulator import simulate

    sim = load_config(None, {"data": {"source": "simulator"}, "eval": {"category": {"recency_decay": 0.5}}})
    assert sim.eval.category.columns == ["category", "tone", "setting"] and sim.eval.category.recency_decay == 0.5
    assert set(sim.eval.category.columns) <= set(simulate(sim.data.simulator.model_copy(update={"n_users": 5, "n_items": 20, "days": 2})).items.columns)
    assert load_config(None, {"data": {"source": "simulator"}, "eval": {"category": {"columns": ["tone"]}}}).eval.category.columns == ["tone"]
    assert load_config(None, {}).eval.category.columns == ["category"]
    again = yaml.safe_load(dump_config(sim))
    assert again["eval"]["category"]["columns"] == ["category", "tone", "setting"]


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")))
def test_shipped_configs_load(name):
    """Every config the docs point to (configs/*.yaml) is valid against today's settings."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / name)
    assert cfg.run_dir.parts[0] == "runs"


def test_overrides_that_are_not_a_mapping_are_one_line() -> None:
    """load_config(None, ["x"]) was an AttributeError from the merge."""
    with pytest.raises(ConfigError, match=r"overrides must be a mapping of sections .*got list"):
        load_config(None, ["x"])  # type: ignore[arg-type]


def test_a_bad_override_key_is_blamed_on_the_overrides_not_the_file(tmp_path: Path) -> None:
    """load_config(file, {"run_dr": ...}) said "invalid config in <file>: run_dr: ...", as though the file had it."""
    p = tmp_path / "c.yaml"
    p.write_text("sedd: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p, {"run_dr": "x"})
    assert str(err.value) == (
        f"invalid config in {p}: sedd: Extra inputs are not permitted (did you mean seed?); in the overrides: run_dr: Extra inputs "
        "are not permitted (did you mean run_dir?)"
    )
    p.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=r"^invalid config in the overrides: sft\.train\.max_steps: .*nested mappings"):
        load_config(p, {"sft.train.max_steps": 5})
    with pytest.raises(ConfigError, match=rf"^invalid config in {p}: sedd"):
        p.write_text("sedd: 1\n")
        load_config(p, {"seed": 2})


def test_a_section_refused_for_settings_from_the_file_is_not_blamed_on_overrides_of_other_keys(tmp_path: Path) -> None:
    """Review: any override in a section (here sft.train.max_steps) made the section's own refusal, caused by the
    file's settings, read "in the overrides"; it names the file, with the overrides when both set the section."""
    p = tmp_path / "c.yaml"
    p.write_text("sft:\n  tasks: {timeline: 1.0}\n  prompt: {variant: merged}\n")
    with pytest.raises(ConfigError, match=rf"^invalid config in {p}: sft: Value error, sft.tasks.timeline needs"):
        load_config(p)
    with pytest.raises(ConfigError, match=rf"^invalid config in {p} with the overrides: sft: .*timeline needs"):
        load_config(p, {"sft": {"train": {"max_steps": 5}}})
    with pytest.raises(ConfigError, match=r"^invalid config in the overrides: sft: .*timeline needs"):
        load_config(None, {"sft": {"tasks": {"timeline": 1.0}, "prompt": {"variant": "merged"}}})


def test_load_config_takes_the_preset_spelling_every_cli_c_takes() -> None:
    """load_config("preset:tiny") said "config file not found: <cwd>/preset:tiny"."""
    from conrec.config import preset_path

    assert load_config("preset:tiny", {"run_dir": "x"}) == load_config(preset_path("tiny"), {"run_dir": "x"})
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("preset:nope")


def test_the_reference_lists_the_values_a_choice_setting_takes_and_a_terminal_sees_lt_unescaped():
    """data.source and sid.quantizer.kind had an empty "meaning" (Literal choices were never listed), and a terminal
    showed `rating &lt;= this` for the Markdown escape."""
    from conrec.config import config_reference, config_reference_markdown

    meaning = {key: desc for key, _, desc in config_reference()}
    assert meaning["serve.log_level"] == "one of: critical, error, warning, info, debug"  # no description: the values
    assert meaning["data.ts_unit"].endswith("(one of: auto, s, ms, us)")  # "s" was named nowhere
    assert meaning["eval.models"].endswith("(each one of: sft, grpo)")
    assert "one of" not in meaning["sft.prompt.variant"]  # its description names every variant already
    for key, values in (("data.source", ("movielens100k", "simulator", "table", "movielens", "kuairand", "amazon")),
                        ("sid.quantizer.kind", ("rqvae", "rkmeans"))):
        assert all(v in meaning[key] for v in values), key
    assert "&lt;" in config_reference_markdown() and "&lt;" not in config_reference_markdown(escape_html=False)
    assert "rating <= this" in config_reference_markdown(escape_html=False)


def test_the_positive_budget_says_which_layouts_read_it() -> None:
    """Found by probing: ``sft.prompt.max_pos_items: 0`` with a timeline layout was accepted and ignored (every
    SFT window and every eval, predict and serve prompt still showed all positives), while the reference called it
    "budget of the positive segment"; it now names the layouts that read it."""
    from conrec.config import config_reference

    (description,) = [d for key, _, d in config_reference() if key == "sft.prompt.max_pos_items"]
    assert "segmented" in description and "merged" in description
    assert "timeline layouts show every positive of their window" in description


@pytest.mark.parametrize("preset", [None, "tiny", "demo"])
def test_conrec_config_says_its_output_freezes_derived_defaults_and_reads_back_exactly(tmp_path: Path, monkeypatch, preset) -> None:
    """The printed config bakes in values derived from other settings: a copy edited in one key (data.source:
    simulator, sft.prompt.max_pos_items) was not the config the same edit to the preset gives, and nothing said so."""
    from typer.testing import CliRunner

    from conrec.cli import app
    from conrec.stages import STAGES, stage_fingerprint

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["config", *(["-c", f"preset:{preset}"] if preset else [])])
    assert res.exit_code == 0, res.output
    header = [line for line in res.output.splitlines() if line.startswith("#")]
    text = " ".join(h.lstrip("# ") for h in header)
    assert res.output.splitlines()[: len(header)] == header and "derived from other settings" in text
    assert "write only the keys you change" in text and "preset" in text
    (tmp_path / "eff.yaml").write_text(res.output)
    again, cfg = load_config(tmp_path / "eff.yaml"), load_config(f"preset:{preset}" if preset else None)
    assert again == cfg and dump_config(again) == res.output.split("\n", len(header))[-1]
    assert all(stage_fingerprint(again, s) == stage_fingerprint(cfg, s) for s in STAGES)


@pytest.mark.parametrize(("given", "hint"), [("tiny", True), ("demo.yaml", True), ("sub/tiny", False), ("mine", False)])
def test_a_missing_file_named_like_a_preset_points_to_the_preset_spelling(tmp_path: Path, monkeypatch, given: str, hint: bool) -> None:
    """`conrec config -c tiny` said only "config file not found: .../tiny"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found") as err:
        load_config(given)
    name = Path(given).stem
    assert (f"(for the preset, write preset:{name})" in str(err.value)) is hint, str(err.value)


def test_config_reference_refuses_a_config_it_would_not_read() -> None:
    """`conrec config --reference -c preset:tiny` printed the defaults' reference, silently ignoring -c."""
    from typer.testing import CliRunner

    from conrec.cli import app

    res = CliRunner().invoke(app, ["config", "--reference", "-c", "preset:tiny"], env={"COLUMNS": "300"})
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "--reference prints every setting's default and reads no config; drop -c/-r" in out, out
    assert CliRunner().invoke(app, ["config", "--reference"]).exit_code == 0
