"""A config file's top-level ``base:``: the config it starts from (a preset or another YAML file).

Why: ``conrec config`` and docs/configuration.md advised "write only the keys you change, in a small file", but a
file was read over the library defaults (a pretrained SmolLM2, the segmented prompt), not over the demo preset the
user had read: a small file changing only ``data.split`` trained another model, for hours, without a word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conrec.config import EFFECTIVE_CONFIG_HEADER, PipelineConfig, dump_config, load_config
from conrec.errors import ConfigError

PER_USER = {"split": {"protocol": "per_user", "train_until": "test"}}


def test_a_small_file_over_a_preset_is_the_preset_with_its_keys_changed(tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"
    small.write_text("base: preset:demo\nrun_dir: runs/pu\ndata: {split: {protocol: per_user, train_until: test}}\n")
    cfg = load_config(small)
    assert cfg == load_config("preset:demo", {"run_dir": "runs/pu", "data": PER_USER})
    assert cfg.sft.model.tiny is not None  # the demo's small model, not the pretrained backbone
    assert "base" not in PipelineConfig.model_fields and "\nbase:" not in "\n" + dump_config(cfg)
    assert load_config(_written(tmp_path, dump_config(cfg))) == cfg


def test_a_file_without_base_starts_from_the_library_defaults(tmp_path: Path) -> None:
    cfg = load_config(_written(tmp_path, "data: {split: {protocol: per_user, train_until: test}}\n"))
    assert cfg == load_config(None, {"data": PER_USER})
    assert cfg.sft.model.tiny is None and load_config("preset:demo").sft.model.tiny is not None


def test_bases_chain_and_the_last_file_wins(tmp_path: Path) -> None:
    (tmp_path / "mid.yaml").write_text("base: preset:demo\nseed: 5\nsft: {train: {max_steps: 7}}\n")
    cfg = load_config(_written(tmp_path, "base: mid.yaml\nseed: 9\n"))
    assert cfg == load_config("preset:demo", {"seed": 9, "sft": {"train": {"max_steps": 7}}})


@pytest.mark.parametrize("files", [{"a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"}, {"a.yaml": "base: ./a.yaml\n"}])
def test_a_base_cycle_is_a_one_line_error(tmp_path: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match="its bases form a cycle") as info:
        load_config(tmp_path / "a.yaml")
    assert "\n" not in str(info.value) and str((tmp_path / "a.yaml").resolve()) in str(info.value)


def test_a_missing_base_is_not_found_naming_the_file_that_asked(tmp_path: Path) -> None:
    small = _written(tmp_path, "base: nope.yaml\nseed: 1\n")
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(small)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "nope.yaml") in message and f"the base of {small}" in message


@pytest.mark.parametrize("base", ["3", "''", "[preset:demo]"])
def test_a_base_that_names_no_config_is_an_error(tmp_path: Path, base: str) -> None:
    with pytest.raises(ConfigError, match="base must name a config"):
        load_config(_written(tmp_path, f"base: {base}\n"))


def test_a_relative_path_in_a_base_resolves_against_the_base_files_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "base.yaml").write_text("base: preset:demo\nsid: {encoder: {cache_dir: enc_cache}}\n")
    (tmp_path / "mine").mkdir()
    small = tmp_path / "mine" / "small.yaml"
    small.write_text("base: ../shared/base.yaml\nsft: {model: {path: my_model}}\n")
    monkeypatch.chdir(tmp_path / "mine")
    cfg = load_config("small.yaml")
    assert Path(cfg.sid.encoder.cache_dir) == tmp_path / "mine" / ".." / "shared" / "enc_cache"
    assert Path(cfg.sft.model.path) == tmp_path / "mine" / "my_model"


def test_an_invalid_value_over_a_base_names_the_key_and_its_file(tmp_path: Path) -> None:
    small = _written(tmp_path, "base: preset:demo\nsft: {train: {max_steps: -3}}\nserve: {api_key: 0123456}\n")
    with pytest.raises(ConfigError) as info:
        load_config(small)
    message = str(info.value)
    assert message.startswith(f"invalid config in {small}: ") and "sft.train.max_steps" in message
    assert "serve.api_key" in message and "'0123456'" in message  # quoted as the small file wrote it
    (tmp_path / "base.yaml").write_text("sft: {train: {max_steps: -3}}\n")
    with pytest.raises(ConfigError, match=re.escape(f"invalid config in {tmp_path / 'base.yaml'}: sft.train.max_steps")):
        load_config(_written(tmp_path, "base: base.yaml\nseed: 2\n"))


def test_a_value_the_small_file_replaces_is_not_quoted_from_the_base(tmp_path: Path) -> None:
    """The base wrote ``api_key`` as an unquoted number; the small file's value (a number, written with a tag) is not
    what the base wrote, and the error must not quote the base's text for it."""
    (tmp_path / "base.yaml").write_text("serve: {api_key: 0123456}\n")
    with pytest.raises(ConfigError) as info:
        load_config(_written(tmp_path, 'base: base.yaml\nserve: {api_key: !!int "7"}\n'))
    assert "0123456" not in str(info.value) and "serve.api_key" in str(info.value)


def test_the_advice_names_base_and_the_docs_example_is_the_demo_with_per_user_splits(tmp_path: Path) -> None:
    header = " ".join(line.lstrip("# ") for line in EFFECTIVE_CONFIG_HEADER.splitlines())
    assert "base: preset:<name>" in header and "library defaults" in header
    page = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    example = re.search(r"```yaml\n(base: preset:demo\n.*?)```", page, re.S)
    assert example is not None, "docs/configuration.md lost its `base: preset:demo` example"
    cfg = load_config(_written(tmp_path, example.group(1)))
    assert cfg == load_config("preset:demo", {"run_dir": cfg.run_dir, "data": PER_USER})


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*.yaml')))}.yaml"
    path.write_text(text)
    return path
