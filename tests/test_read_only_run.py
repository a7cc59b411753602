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


def test_a_stage_that_cannot_clear_a_later_stage_refuses_before_clearing_any(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``conrec sft`` on a run whose ``eval/`` was read-only removed the SFT and GRPO done markers, then stopped on eval's
    (naming its hidden temporary), before any training: `conrec predict` then refused the run. Now it refuses first and
    the run is as it was."""
    from conrec.errors import StageInputError
    from conrec.runs import RunDir

    from builders import run_files

    cfg, run = finished_run(tmp_path / "run")
    run_pipeline(cfg, console=Console(quiet=True))  # the run's config.yaml, as a finished run has it
    frozen = run.eval.resolve()
    real_access, real_temp = os.access, conrec.io.locked_temp_dir

    def access(path: object, mode: int, **kw: object) -> bool:
        return not (mode & os.W_OK and Path(str(path)).resolve().is_relative_to(frozen)) and real_access(path, mode, **kw)  # type: ignore[arg-type]

    def temp_dir(parent: object, name: str):  # type: ignore[no-untyped-def]
        if Path(str(parent)).resolve().is_relative_to(frozen):
            raise OSError(errno.EROFS, "Read-only file system", str(Path(str(parent)) / f".{name}.56mn906k.tmp"))
        return real_temp(parent, name)  # type: ignore[arg-type]

    monkeypatch.setattr(conrec.io.os, "access", access)
    monkeypatch.setattr(conrec.io, "_read_only_mount", lambda path: True)
    monkeypatch.setattr(conrec.io, "locked_temp_dir", temp_dir)
    kept = run_files(run.root)
    with pytest.raises(StageInputError, match=rf"^the sft stage cannot start: {run.eval} is on a read-only file system, and "
                       "starting it marks the eval stage there unfinished; nothing was changed"):
        run_stage(cfg, "sft", console=Console(quiet=True))
    assert run_files(run.root) == kept
    assert all(RunDir(cfg.run_dir).is_done(s) for s in ("sft", "grpo", "eval"))


def test_a_stage_start_looks_at_each_directory_it_clears_once(fake_stages: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Found in review: a stage start checked every directory it clears twice, before it wrote anything and again as it
    cleared them. Once is enough: what it does in between (its ``config.yaml``, the links it removes) makes no other
    directory one to clear."""
    import conrec.runs

    cfg, _run = finished_run(tmp_path / "run")
    looked: list[str] = []
    real = conrec.runs.unwritable

    def unwritable(directory: Path) -> str | None:
        looked.append(directory.name)
        return real(directory)

    monkeypatch.setattr(conrec.runs, "unwritable", unwritable)
    run_stage(cfg, "grpo", console=Console(quiet=True))
    assert fake_stages == ["grpo"] and sorted(looked) == ["eval", "grpo"]
