"""A full disk, a file size limit or a quota met while conrec writes is one line naming the file (or the stage
directory) and the cause, exit 2, as a read-only directory is, not a library's traceback. The Hugging Face Trainer's
own ``torch.save`` of optimizer.pt, scheduler.pt and its RNG state raises PyTorch's errno-less ``RuntimeError`` from
inline_container.cc: a stage names it by its directory when that disk is nearly full or a file size limit is set.

Found by a full-disk probe (tmpfs mounts of 60 KB to 26 MB, and ``ulimit -f``): safetensors' ``SafetensorError``
(SFT's and GRPO's model save), tokenizers' bare ``Exception`` (the tokenizer save), polars' ``ComputeError`` (the
data stage's tables) and numpy's short write (``OSError`` without an errno) each ended in a 60-line traceback. The
disk is simulated here by making the writer raise the library's own exception with the text it gives on a full disk.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from rich.console import Console
from safetensors import SafetensorError
from typer.testing import CliRunner

import conrec.io
import conrec.pipeline as pipeline
from conrec.cli import app
from conrec.config import load_config, preset_path
from conrec.errors import os_error_line, write_error_line
from conrec.io import write_json, write_npy, write_parquet

FULL = "No space left on device"
SAFETENSORS_FULL = SafetensorError(f"Error while serializing: I/O error: {FULL} (os error {errno.ENOSPC})")
POLARS_FULL = pl.exceptions.ComputeError(f"parquet: File out of specification: underlying IO error: {FULL} (os error {errno.ENOSPC})")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (SAFETENSORS_FULL, FULL),
        (SafetensorError(f"Error while serializing: I/O error: File too large (os error {errno.EFBIG})"), "File too large"),
        (Exception(f"{FULL} (os error {errno.ENOSPC})"), FULL),  # tokenizers' save
        (POLARS_FULL, FULL),
        (OSError("76800 requested and 63968 written"), "short write (63968 of 76800 bytes written)"),  # numpy
        (OSError(errno.EFBIG, "File too large", "m.npy"), "m.npy: File too large"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded"),
    ],
)
def test_a_library_full_disk_error_is_one_line(exc: BaseException, reason: str) -> None:
    line = write_error_line(exc)
    assert line is not None and reason in line and "\n" not in line


def test_a_wrapped_full_disk_error_is_found_through_its_cause() -> None:
    try:
        try:
            raise SAFETENSORS_FULL
        except SafetensorError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert write_error_line(outer) == f"{FULL} (RuntimeError while writing)"


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        SafetensorError("Error while deserializing header: HeaderTooLarge"),
        Exception(f"No such file or directory (os error {errno.ENOENT})"),
        RuntimeError(f"Permission denied (os error {errno.EACCES})"),  # may be a read: not taken for a write failure
        OSError("12 requested"),
        KeyError(FULL),  # the words alone, from no I/O error
    ],
)
def test_other_errors_keep_their_traceback(exc: BaseException) -> None:
    assert write_error_line(exc) is None


def test_a_bug_raised_while_handling_a_full_disk_is_not_taken_for_it() -> None:
    try:
        try:
            raise SAFETENSORS_FULL
        except SafetensorError:
            raise KeyError("a bug in the handler") from None
    except KeyError as bug:
        bug.__suppress_context__ = False  # raised during the other, not from it
        assert write_error_line(bug) is None


def test_a_file_size_limit_is_a_write_errno() -> None:
    assert os_error_line(OSError(errno.EFBIG, "File too large", "x.parquet")) == "x.parquet: File too large"


def _raise(exc: BaseException) -> Any:
    def boom(*_a: object, **_k: object) -> None:
        raise exc

    return boom


def test_atomic_writes_name_the_file_and_keep_the_library_error_as_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _raise(POLARS_FULL))
    with pytest.raises(OSError) as parquet:
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    assert parquet.value.errno == errno.ENOSPC and parquet.value.filename == str(tmp_path / "t.parquet")
    assert parquet.value.__cause__ is POLARS_FULL

    monkeypatch.setattr(np, "save", _raise(OSError("76800 requested and 63968 written")))
    with pytest.raises(OSError, match="short write") as npy:
        write_npy(np.zeros((2, 2)), tmp_path / "v.npy")
    assert npy.value.filename == str(tmp_path / "v.npy")

    monkeypatch.setattr(Path, "write_text", _raise(OSError(errno.ENOSPC, FULL)))  # write()/close(): no file named
    with pytest.raises(OSError) as json_:
        write_json({}, tmp_path / "s.json")
    assert json_.value.filename == str(tmp_path / "s.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary left, nothing half-written


def test_an_error_inside_the_temporary_names_the_final_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write(self: Path, *_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, FULL, str(self))  # names the hidden temporary file

    monkeypatch.setattr(Path, "write_text", write)
    with pytest.raises(OSError) as named:
        write_json({}, tmp_path / "s.json")
    assert named.value.filename == str(tmp_path / "s.json")


def test_an_unrelated_error_in_an_atomic_write_passes_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bug = ValueError("a bug")
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _raise(bug))
    with pytest.raises(ValueError) as raised:
        write_parquet(pl.DataFrame({"a": [1]}), tmp_path / "t.parquet")
    assert raised.value is bug


def test_a_full_disk_in_a_data_stage_write_is_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl.DataFrame, "write_parquet", _raise(POLARS_FULL))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["data", "-c", "preset:tiny", "-r", str(run_dir)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # the progress lines, then the error
    assert "Traceback" not in said and said[said.index("error:"):] == f"error: {run_dir}/data/events.parquet: {FULL}"
    assert not (run_dir / "data" / "_done.json").exists()


def test_a_full_disk_in_a_write_no_file_names_names_the_stage_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What writes no file through conrec (a Hugging Face trainer's checkpoint) is named by its stage's directory,
    when that directory's disk is the full one."""
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: _raise(Exception(f"{FULL} (os error {errno.ENOSPC})")))
    monkeypatch.setattr(conrec.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(OSError) as raised:
        pipeline.run_stage(cfg, "data", console=Console(quiet=True))
    assert raised.value.filename == str(tmp_path / "run" / "data") and raised.value.strerror == FULL


def test_a_full_disk_elsewhere_in_a_write_no_file_names_is_not_blamed_on_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full /tmp or /dev/shm met by a write that names no file: the run's own disk has room, and the line says so
    (it used to tell the user that the stage's directory was out of space)."""
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: _raise(Exception(f"{FULL} (os error {errno.ENOSPC})")))
    monkeypatch.setattr(conrec.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 2**30, 9 * 2**30))
    with pytest.raises(OSError) as raised:
        pipeline.run_stage(cfg, "data", console=Console(quiet=True))
    assert raised.value.strerror.startswith(f"{FULL} in a write that names no file") and "9.0 GiB free: another disk is full" in raised.value.strerror


def test_a_temporary_that_cannot_be_made_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoder cache on a read-only mount said ``.../.99da8fd3...npy.cm_6f0yl.tmp: Read-only file system``."""
    import conrec.io

    def mkdtemp(prefix: str, suffix: str, dir: Path) -> str:
        raise OSError(errno.EROFS, "Read-only file system", str(Path(dir) / f"{prefix}cm_6f0yl{suffix}"))

    monkeypatch.setattr(conrec.io.tempfile, "mkdtemp", mkdtemp)
    with pytest.raises(OSError) as refused:
        write_npy(np.zeros((1, 1)), tmp_path / "v.npy")
    assert refused.value.filename == str(tmp_path / "v.npy") and refused.value.errno == errno.EROFS


def test_a_run_with_nothing_to_run_writes_nothing_so_a_full_disk_does_not_stop_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``conrec demo`` on a finished run on a full disk said every stage was skipped, then ``error: No space left on
    device``: it rewrote ``config.yaml`` with the text it already held."""
    import conrec.io
    from conrec.pipeline import run_pipeline

    from builders import finished_run, run_files

    cfg, run = finished_run(tmp_path / "run")
    run_pipeline(cfg, console=Console(quiet=True))  # records the run's config.yaml, as every finished run has it
    kept = run_files(run.root)
    written = (run.root / "config.yaml").stat().st_mtime_ns

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(conrec.io, "locked_temp_dir", full)  # every atomic write
    assert run_pipeline(cfg, console=Console(quiet=True)) == {}
    assert run_files(run.root) == kept and (run.root / "config.yaml").stat().st_mtime_ns == written


TORCH_UNDER_LIMIT = """
import resource, signal, sys, torch
from conrec.errors import write_error_line
from conrec.llm.training.ema import EmaWeights
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    EmaWeights(torch.nn.Linear(256, 256), 0.9).save(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, write_error_line(exc))
"""


def test_a_torch_save_past_a_file_size_limit_is_one_line_naming_the_file(tmp_path):
    """Found in review: on a full disk (a 64 KB tmpfs) or past ``ulimit -f``, ``torch.save`` to a path raised PyTorch's
    ``RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534``, no errno, a traceback.
    conrec's own saves (the EMA and early-stopping states, the SID quantizer) now write through a Python file object
    (conrec.io.write_torch), so the error is the kernel's, named by file. A real limit, in a process of its own; the
    Hugging Face Trainer's optimizer.pt, scheduler.pt and RNG state are still its own torch.save calls."""
    import os
    import subprocess
    import sys

    target = tmp_path / "ema.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", TORCH_UNDER_LIMIT, str(target)], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == f"OSError {target}: File too large", out.stdout + out.stderr
    assert not target.exists() and not [p for p in tmp_path.iterdir()]  # the temporary went too


TORCH_WRITER_FAILED = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_a_full_disk_met_by_pytorchs_own_writer_names_the_stage_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's optimizer.pt on a full disk (a 512 KB tmpfs gave exactly this error) was a traceback: PyTorch's
    writer gives no errno, so the stage's disk, nearly full, is taken as the cause."""
    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: _raise(TORCH_WRITER_FAILED))
    monkeypatch.setattr(conrec.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(OSError) as raised:
        pipeline.run_stage(cfg, "data", console=Console(quiet=True))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "run" / "data")
    assert raised.value.strerror.startswith(FULL) and "PyTorch's file writer failed without a cause" in raised.value.strerror
    assert raised.value.__cause__ is TORCH_WRITER_FAILED


def test_pytorchs_writer_failing_with_room_and_no_size_limit_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With room on the disk and no file size limit the cause is unknown (a failing device?): not called a full disk."""
    import resource

    cfg = load_config(preset_path("tiny"), {"run_dir": str(tmp_path / "run")})
    monkeypatch.setattr(pipeline, "_stage_runner", lambda stage: _raise(TORCH_WRITER_FAILED))
    monkeypatch.setattr(conrec.io.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * 2**30, 2**30, 9 * 2**30))
    monkeypatch.setattr(resource, "getrlimit", lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with pytest.raises(RuntimeError) as raised:
        pipeline.run_stage(cfg, "data", console=Console(quiet=True))
    assert raised.value is TORCH_WRITER_FAILED


TORCH_PATH_SAVE_UNDER_LIMIT = """
import resource, signal, sys, torch
from conrec.errors import write_error_line
from conrec.io import naming_write_failures
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    with naming_write_failures(sys.argv[1], somewhere_inside=True):
        torch.save(torch.nn.Linear(256, 256).state_dict(), sys.argv[1] + "/optimizer.pt")  # as the trainer saves it
except Exception as exc:
    print(type(exc).__name__, write_error_line(exc))
"""


def test_pytorchs_writer_past_a_file_size_limit_is_one_line_naming_the_directory(tmp_path: Path) -> None:
    """A real ``torch.save`` to a path (the Hugging Face trainer's way) past ``ulimit -f``, in a process of its own."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH")) if p)}
    out = subprocess.run([sys.executable, "-c", TORCH_PATH_SAVE_UNDER_LIMIT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == (
        f"OSError {tmp_path}: File too large (PyTorch's file writer failed without a cause; a file size limit, ulimit -f, is set: "
        "65,536 bytes)"
    ), out.stdout + out.stderr
