"""Config files: values of the wrong kind and unreadable paths are one-line errors naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from conrec.config import load_config
from conrec.errors import ConfigError


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("sft:\n  train:\n    max_steps: true\n", "sft.train.max_steps: Value error, must be a number, not the boolean true"),
        ('seed: "0"\n', "seed: Value error, must be int, not the string '0' (remove the quotes)"),
        ("seed: abc\n", "seed: Value error, must be int, not the string 'abc'\n"),  # no quotes to remove: no such hint
        ("seed: '1.5'\n", "must be int, not the string '1.5'\n"),
        ("threads: '2'\n", "threads"),
        ("serve:\n  max_k: false\n", "serve.max_k"),
        ("eval:\n  swing:\n    alpha: 'x'\n", "alpha"),
    ],
)
def test_a_bool_or_a_quoted_number_is_not_silently_converted(tmp_path: Path, yaml_text: str, needle: str) -> None:
    # regression (issue 24.7): `max_steps: true` was read as 1 and `seed: "0"` as 0
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError, match="invalid config") as err:
        load_config(p)
    assert needle in str(err.value) + "\n"


def test_conversions_yaml_needs_still_work(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nrun_dir: somewhere\nsft:\n  train:\n    learning_rate: 1\n")
    cfg = load_config(p)
    assert cfg.seed == 3 and cfg.run_dir == Path("somewhere") and cfg.sft.train.learning_rate == 1.0


def test_a_directory_as_config_is_a_one_line_error(tmp_path: Path) -> None:
    # regression (issue 24.6): IsADirectoryError traceback
    with pytest.raises(ConfigError, match="is a directory, not a YAML file"):
        load_config(tmp_path)


def test_a_non_utf8_config_is_a_one_line_error(tmp_path: Path) -> None:
    # regression (issue 24.6): UnicodeDecodeError traceback
    p = tmp_path / "c.yaml"
    p.write_bytes(b"seed: 1\n\xff\xfe\x00garbage\n")
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 8"):
        load_config(p)


def test_the_cli_prints_one_line_for_a_directory_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conrec.cli import app

    result = CliRunner().invoke(app, ["data", "-c", str(tmp_path)])
    assert result.exit_code != 0
    assert "is a directory" in result.output and "Traceback" not in result.output
