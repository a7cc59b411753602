"""A finished run on a read-only mount: what only reads it works, and what writes it says so in one line, before any
work (found by an upgrade probe: ``conrec predict --split test`` decoded the whole split, then stopped on its
temporary file; ``conrec demo``/``eval`` on a fully current run said only ``.conrec.lock: Read-only file system``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from rich.console import Console

import conrec.io
import conrec.run_lock
from conrec.errors import ConfigError
from conrec.llm.inference.predict_request import check_predict_request
from conrec.pipeline import run_pipeline, run_stage
from conrec.run_lock import RunReadOnlyError

from builders import finished_run


@pytest.fixture()
def read_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Everything under ``tmp_path/ro`` behaves as on a read-only mount (as root, chmod does not stop a write)."""
    root = tmp_path / "ro"
    real_access = os.access

    def access(path: object, mode: int, **kw: object) -> bool:
        if mode & os.W_OK and Path(str(path)).resolve().is_relative_to(root.resolve()):
            return False
        return real_access(path, mode, **kw)  # type: ignore[arg-type]

    def take(lock: object) -> bool:  # what FileLock raises opening the lock file there
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(conrec.io.os, "access", access)
    monkeypatch.setattr(conrec.io, "_read_only_mount", lambda path: True)
    monkeypatch.setattr(conrec.run_lock, "_take", take)
    return root


def test_demo_and_eval_on_a_current_read_only_run_say_nothing_needs_to_run(read_only: Path) -> None:
    cfg, _run = finished_run(read_only)
    quiet = Console(quiet=True)
    with pytest.raises(RunReadOnlyError, match=r"cannot be written \(\.conrec\.lock: Read-only file system\): every stage "
                       "this command would run is current, so nothing needs to run; conrec predict, score and serve"):
        run_pipeline(cfg, console=quiet)
    with pytest.raises(RunReadOnlyError, match="nothing needs to run"):
        run_stage(cfg, "eval", console=quiet)
    with pytest.raises(RunReadOnlyError, match=r"this command writes to it; copy it \(cp -a\)"):
        run_pipeline(cfg, force=True, console=quiet)


def test_predict_on_a_split_checks_where_it_writes_before_decoding(read_only: Path, tmp_path: Path) -> None:
    cfg, run = finished_run(read_only)
    with pytest.raises(ConfigError, match=r"predictions file .*grpo_test\.parquet cannot be written: .* is on a read-only "
                       "file system; pass -o FILE to write it elsewhere"):
        check_predict_request(cfg, None, "test", "grpo")
    assert not run.predictions.exists()
    check_predict_request(cfg, None, "test", "grpo", out=tmp_path / "elsewhere.parquet")  # -o: fine
