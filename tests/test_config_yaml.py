"""How a config file's YAML is read (conrec.config_yaml): what plain yaml.safe_load got silently wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("sft:\n  train:\n    <<: {max_steps: 1}\n    <<: {max_steps: 2}\n", "merge key sft.train.<< is written twice (lines 3 and 4)"),
        ("seed: 1\nsft: {yes: 1, true: 2}\n", "key sft.true is written twice (as yes and true, which YAML reads as one key) (lines 2 and 2)"),
        ("null: 1\n~: 2\n", "key ~ is written twice (as null and ~"),
    ],
)
def test_a_repeated_merge_key_is_refused_and_a_key_is_named_as_written(tmp_path: Path, text: str, where: str) -> None:
    """A second ``<<`` in one mapping was skipped by the check (the second merge silently won every shared key), and
    ``{yes: 1, true: 2}`` was reported as "key True is written twice": neither spelling the user wrote."""
    with pytest.raises(ConfigError, match="written twice") as err:
        _load(tmp_path, text)
    assert where in str(err.value), str(err.value)


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


_EDGE_STRINGS = ["5e10", "1e3", "123e4567", "1.0e5", ".5e3", "+1e2", "-2E-3", "1e", "0123456", "0x1F", "1_000", "12:30", "yes", "on",
                 "~", "null", "<<", "=", "2024-01-01", ".inf", ".nan", "-", "", " x", "x ", "a: b", "#c", "'q'", '"d"', "用户ID", "1e-4"]


@pytest.mark.parametrize("text", _EDGE_STRINGS)
def test_a_string_conrec_writes_reads_back_as_that_string(text: str) -> None:
    """The writers quoted as YAML 1.1 reads (PyYAML's SafeDumper): ``5e10`` was left plain, and the loader, which reads
    YAML 1.2 exponent floats, read it back as 50000000000.0. Keys, values, block and flow style all read back."""
    from conrec.config_yaml import dump_yaml, load_yaml
    from conrec.init_config import _q

    value = {"k": text, text: [text], "n": {"m": text}}
    assert load_yaml(dump_yaml(value)) == value
    assert load_yaml(dump_yaml(value, default_flow_style=True)) == value
    assert load_yaml(f"k: {_q(text)}") == {"k": text}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789eE+-._:xXob ~#<='\"yYnN\tTtrufalsi")), max_size=12) | st.text(max_size=12))
def test_any_string_dumped_loads_back_identically(text: str) -> None:
    from conrec.config_yaml import dump_yaml, load_yaml

    assert load_yaml(dump_yaml({"k": text, "l": [text]})) == {"k": text, "l": [text]}


def test_a_config_with_number_like_text_reads_back_from_its_dump(tmp_path: Path) -> None:
    """A run's ``config.yaml`` (and ``conrec config``'s output) with ``serve.api_key: '5e10'`` could not be loaded back:
    "serve.api_key: must be text, but YAML reads 50000000000.0 unquoted as a number"."""
    from conrec.config import dump_config, dump_effective_config

    cfg = load_config(None, {"run_dir": "1e3", "serve": {"api_key": "5e10"}})
    for i, text in enumerate([dump_config(cfg), dump_effective_config(cfg)]):
        (tmp_path / f"d{i}.yaml").write_text(text)
        again = load_config(tmp_path / f"d{i}.yaml")
        assert (str(again.run_dir), again.serve.api_key) == ("1e3", "5e10") and again == cfg
