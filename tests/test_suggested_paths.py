"""A command that a refusal suggests is pasted as written: a path in it with a space must stay one argument.

Found by an upgrade probe: the copied-run refusal said ``pass -r /…/demo copy ü to work on the run``, three
arguments in a shell."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from conrec.ablation import refuse_child_run
from conrec.cli import _check_run_record
from conrec.errors import ConfigError


def _suggested(message: str, after: str) -> list[str]:
    """The shell words of ``message`` from ``after`` on, as a shell splits a pasted line."""
    return shlex.split(message[message.index(after):])


def test_the_copied_run_refusal_quotes_the_run_to_pass(tmp_path: Path) -> None:
    copy = tmp_path / "demo copy ü"
    (copy / "data").mkdir(parents=True)
    (copy / "data" / "_done.json").write_text("{}")
    with pytest.raises(ConfigError) as exc:
        _check_run_record(copy / "config.yaml", tmp_path / "original")
    assert _suggested(str(exc.value), "-r ")[:2] == ["-r", str(copy)]


def test_the_child_run_refusal_quotes_the_parent(tmp_path: Path) -> None:
    parent = tmp_path / "my run"
    child = parent / "ablations" / "grpo" / "sft"
    child.mkdir(parents=True)
    (child / "parent.json").write_text(json.dumps({"parent": str(parent), "linked": ["data"]}))
    with pytest.raises(ConfigError) as exc:
        refuse_child_run(child, "grpo")
    assert _suggested(str(exc.value), "conrec ablate") == ["conrec", "ablate", "-r", str(parent), "--what", "grpo"]
