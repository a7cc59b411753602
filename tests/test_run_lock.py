"""One writer per run directory (conrec.run_lock): a second process stops at once, with one line,
before it writes anything; the OS releases the lock when the holder dies, even by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conrec.cli import app
from conrec.config import load_config, preset_path
from conrec.errors import RunInUseError
from conrec.pipeline import run_pipeline, run_stage
from conrec.run_lock import LOCK_FILE, OWNER_FILE, LaunchedError, holder_description, holding_run


def _holder(run_dir: Path) -> subprocess.Popen[str]:
    """Another process holding ``run_dir``, as a running ``conrec`` stage does; returns once it holds it."""
    code = f"import time\nfrom conrec.run_lock import holding_run\nwith holding_run({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_stops_before_writing_and_goes_on_once_the_holder_is_killed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = load_config(preset_path("tiny"), {"run_dir": str(run_dir)})
    holder = _holder(run_dir)
    try:
        with pytest.raises(RunInUseError, match="is in use by another conrec process") as refused:
            run_stage(cfg, "data")
        assert f"(pid {holder.pid}: `python -c 'import time from conrec.run_lock" in str(refused.value)  # which process to wait for
        with pytest.raises(RunInUseError):
            run_pipeline(cfg, stages=("data",))
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE, OWNER_FILE]  # nothing written: no config, no data
        result = CliRunner().invoke(app, ["data", "-c", "preset:tiny", "-r", str(run_dir)])
        assert result.exit_code != 0
        assert "is in use by another conrec process" in " ".join(result.output.split())  # one message, wrapped
        assert result.output.startswith("error: ") and "Traceback" not in result.output
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    run_stage(cfg, "data")  # the killed holder's lock went with it
    assert (run_dir / "data" / "events.parquet").is_file()


@pytest.mark.parametrize("who", ["writer", "probe"])
def test_a_lock_taken_for_an_instant_refuses_neither_a_writer_nor_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """Found by a loop of refusals: held_elsewhere (every refusal's busy note) takes the lock for an instant to test it,
    and a writer starting in that instant was refused, "in use by another conrec process" with nobody named (567 of
    2000 starts). A writer, and the probe, try again for a moment before they count the run as held. Here the other
    process lets go of the lock between the first and the second try, which the pause between tries orders."""
    import conrec.run_lock as run_lock

    run_dir = tmp_path / "run"
    code = (f"import sys\nfrom conrec.run_lock import holding_run\nwith holding_run({str(run_dir)!r}):\n"
            "    print('held', flush=True)\n    sys.stdin.readline()\nprint('released', flush=True)\nsys.stdin.readline()\n")
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert other.stdin is not None and other.stdout is not None and other.stdout.readline().strip() == "held"
    pauses: list[float] = []

    def let_go(seconds: float) -> None:
        if not pauses:  # the first try met the other process's hold: it lets go now
            assert other.stdin is not None and other.stdout is not None
            other.stdin.write("go\n")
            other.stdin.flush()
            assert other.stdout.readline().strip() == "released"
        pauses.append(seconds)

    monkeypatch.setattr(run_lock, "_pause", let_go, raising=False)  # raising=False: before the fix, the asserts fail
    try:
        if who == "writer":
            with holding_run(run_dir):
                assert (run_dir / OWNER_FILE).is_file()  # its own record: it holds the run
        else:
            assert run_lock.held_elsewhere(run_dir) is False
    finally:
        other.communicate("\n")
    assert len(pauses) == 1


def test_a_refused_stage_leaves_another_writers_temporaries_alone(tmp_path: Path) -> None:
    """A stage removes atomic_path's temporaries only once it holds the run: before, they may be the holder's writes."""
    run_dir = tmp_path / "run"
    cfg = load_config(preset_path("tiny"), {"run_dir": str(run_dir)})
    writing = run_dir / "data" / ".events.parquet.abcdefgh.tmp"
    writing.mkdir(parents=True)
    holder = _holder(run_dir)
    try:
        with pytest.raises(RunInUseError):
            run_stage(cfg, "data")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert writing.is_dir()


@pytest.mark.parametrize(
    ("argv", "orig", "words"),
    [
        (["/s/conrec/cli.py", "sft", "-c", "x"], ["python3", "-m", "conrec.cli", "sft", "-c", "x"], ["conrec", "sft", "-c", "x"]),
        (["/s/tool.py", "-m", "x"], ["python3", "-X", "dev", "-m", "tool", "-m", "x"], ["python", "-m", "tool", "-m", "x"]),
        (["-c", "a"], ["python3", "-c", "import x\nx.run()", "a"], ["python", "-c", "import x x.run()", "a"]),
        (["/usr/bin/conrec", "sft", "-m"], ["/usr/bin/python3", "/usr/bin/conrec", "sft", "-m"], ["conrec", "sft", "-m"]),
        (["/usr/bin/conrec", "sft"], None, ["conrec", "sft"]),
    ],
)
def test_the_owner_record_names_the_command_as_typed(argv: list[str], orig: list[str] | None, words: list[str]) -> None:
    """Found by review: ``python -m conrec.cli sft -c x`` was recorded as ``cli.py sft -c x``, ``python -c`` as ``-c``."""
    from conrec.run_lock import command_words

    assert command_words(argv, orig) == words


def test_the_lock_is_reentrant_in_one_process_and_left_to_the_main_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    with holding_run(run_dir):  # the pipeline holds it and each of its stages takes it again
        with holding_run(run_dir):
            pass
        assert (run_dir / OWNER_FILE).is_file()  # the inner release kept the record of the outer hold
    assert not (run_dir / OWNER_FILE).exists()
    holder = _holder(run_dir)
    try:
        monkeypatch.setenv("RANK", "1")  # a worker rank of a launch whose main rank holds the run
        monkeypatch.setenv("WORLD_SIZE", "2")
        with holding_run(run_dir, distributed=True):  # SFT, GRPO: each process trains, the main one writes the records
            pass
        with pytest.raises(LaunchedError, match="runs in one process"), holding_run(run_dir):  # other work: refused
            pass
        monkeypatch.setenv("WORLD_SIZE", "1")  # a lone process with a stray RANK (a pod's environment) is the main one
        with pytest.raises(RunInUseError), holding_run(run_dir):
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(RunInUseError), holding_run(run_dir):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_run_directory_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only mount (or a full disk) failed with a 26-frame OSError traceback on the lock file."""
    import contextlib
    import errno

    import conrec.pipeline as pipeline

    @contextlib.contextmanager
    def read_only(root: object, **_: object):  # what FileLock raises on a read-only mount
        raise OSError(errno.EROFS, "Read-only file system", str(Path(str(root)) / LOCK_FILE))
        yield

    monkeypatch.setattr(pipeline, "holding_run", read_only)
    result = CliRunner().invoke(app, ["data", "-c", "preset:tiny", "-r", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Read-only file system" in result.output and LOCK_FILE in result.output
    assert "Traceback" not in result.output


def test_a_holder_record_left_by_a_dead_process_or_unreadable_is_not_quoted(tmp_path: Path) -> None:
    """The record naming the holder is a courtesy read on refusals: a SIGKILLed holder leaves it behind (the OS frees
    the lock, not the file), and a refusal must not send the user to wait for a process that is gone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = tmp_path / OWNER_FILE
    record.write_text(f'{{"pid": {dead.pid}, "command": "conrec sft", "since": "then"}}')
    assert holder_description(tmp_path) == ""
    for text in ("not json", "[]", '{"pid": "x", "command": "c", "since": "s"}', '{"pid": 1}'):
        record.write_text(text)
        assert holder_description(tmp_path) == ""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record.write_text(f'{{"pid": {live.pid}, "command": "conrec sft -c a.yaml", "since": "2026-12-06 16:10:02 UTC"}}')
        assert holder_description(tmp_path) == f"pid {live.pid}: `conrec sft -c a.yaml`, since 2026-12-06 16:10:02 UTC"
    finally:
        live.kill()
        live.wait()


KILL_BEFORE_OWNER_RENAME = """
import os, sys, time
import conrec.run_lock as run_lock

def stuck(src, dst):  # the owner record is written to its temporary, not yet renamed
    print(src, flush=True)
    time.sleep(120)

run_lock.os.replace = stuck
with run_lock.holding_run(sys.argv[1]):
    pass
"""


def test_an_owner_record_temporary_a_kill_left_is_removed_by_the_next_holder_only(tmp_path: Path) -> None:
    """Found in review: a SIGKILL between the owner record's write and its rename left ``.conrec.lock.owner.<pid>.tmp``
    in the run directory for good. The next process to hold the run removes it; a process refused while its writer
    lives does not."""
    run_dir = tmp_path / "run"
    writer = subprocess.Popen([sys.executable, "-c", KILL_BEFORE_OWNER_RENAME, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None
        left = Path(writer.stdout.readline().strip())
        assert left.name == f"{OWNER_FILE}.{writer.pid}.tmp" and left.is_file()
        with pytest.raises(RunInUseError):  # its writer lives (and holds the run): kept
            with holding_run(run_dir):
                pass
        assert left.is_file()
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert left.is_file()  # what the kill leaves
    with holding_run(run_dir):
        assert not left.exists()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_FILE]
