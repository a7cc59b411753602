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
