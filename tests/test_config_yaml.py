"""How a config file's YAML is read (conrec.config_yaml): what plain yaml.safe_load got silently wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from conrec.config import load_config, preset_path
from conrec.errors import ConfigError


def _load(tmp_path: Path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return load_config(p)


def test_a_section_appended_to_a_copied_preset_is_refused_naming_it_and_both_lines(tmp_path: Path) -> None:
    """Appending ``sft: {train: {epochs: 1}}`` to the demo preset replaced its whole sft section (the tiny model, the
    timeline task, the learning rate) with defaults, silently: the run trained pretrained SmolLM2 instead."""
    text = preset_path("demo").read_text()
    first = 1 + text.splitlines().index("sft:")
    appended = text + "sft:\n  train:\n    epochs: 1\n"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, appended)
    msg = str(err.value)
    last = len(appended.splitlines()) - 2
    assert "\n" not in msg and "key sft is written twice" in msg and f"lines {first} and {last}" in msg, msg


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("seed: 1\nseed: 2\n", "key seed is written twice (lines 1 and 2)"),
        ("sft:\n  train:\n    max_steps: 5\n    epochs: 2\n    max_steps: 6\n", "key sft.train.max_steps is written twice (lines 3 and 5)"),
        ("data: {seed: 1, seed: 2}\n", "key data.seed is written twice (lines 1 and 1)"),
        ("grpo:\n  stages:\n    - {max_steps: 1, max_steps: 2}\n", "key grpo.stages.0.max_steps"),
    ],
)
def test_a_repeated_key_is_refused_at_any_depth(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match="written twice") as err:
        _load(tmp_path, text)
    assert where in str(err.value)


def test_merge_keys_still_override_and_are_not_repeats(tmp_path: Path) -> None:
    """``<<:`` merges are documented to work: a key beside a merge overrides the merged one (YAML's rule)."""
    cfg = _load(tmp_path, "sft:\n  train:\n    <<: {batch_size: 4, max_steps: 9}\n    max_steps: 3\ngrpo:\n  <<: {batch_size: 4}\n  num_generations: 4\n")
    assert (cfg.sft.train.batch_size, cfg.sft.train.max_steps, cfg.grpo.batch_size) == (4, 3, 4)


@pytest.mark.parametrize(("written", "value"), [("1e-4", 1e-4), ("1e-05", 1e-05), ("1.0e5", 1e5), ("2E-3", 2e-3), ("5.0e-6", 5e-6)])
def test_exponent_floats_are_numbers_as_the_reference_prints_them(tmp_path: Path, written: str, value: float) -> None:
    """PyYAML (YAML 1.1) read ``1e-4`` and ``1e-05`` (the reference's spelling of grpo.learning_rate's default) as
    strings, and the float setting refused them: "must be float, not the string '1e-05'"."""
    cfg = _load(tmp_path, f"sft:\n  train:\n    learning_rate: {written}\ngrpo:\n  learning_rate: {written}\n")
    assert cfg.sft.train.learning_rate == value and cfg.grpo.learning_rate == value


def test_every_float_default_of_the_reference_pastes_back() -> None:
    """Each float default as the reference prints it (json) reads back as that float."""
    import json

    from conrec.config import config_reference
    from conrec.config_yaml import load_yaml

    floats = [(k, d) for k, d, _ in config_reference() if isinstance(json.loads(d), float)]
    assert any("e-" in d for _, d in floats)
    for key, default in floats:
        assert load_yaml(f"{key}: {default}")[key] == json.loads(default), key


@pytest.mark.parametrize("text", ["1e", "e5", "1e-4x", "1e4.5", "abc", "v1e5"])
def test_text_that_is_no_exponent_number_stays_a_string(text: str) -> None:
    from conrec.config_yaml import load_yaml

    assert load_yaml(f"k: {text}") == {"k": text}
    assert load_yaml("k: '1e-4'") == {"k": "1e-4"}  # quoted: a string, as written


def test_a_quoted_exponent_float_is_told_to_lose_its_quotes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grpo.learning_rate: .*not the string '1e-4' \(remove the quotes\)"):
        _load(tmp_path, "grpo:\n  learning_rate: '1e-4'\n")
