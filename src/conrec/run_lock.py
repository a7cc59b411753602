"""One writer per run directory: the lock every stage holds while it runs.

Why: two conrec processes writing one run directory (a second terminal, a retried job) interleave
their outputs and the records of which configuration made them. One process's model could then be
recorded as made with the other's configuration, and served as current; and a stage started with
another configuration discards the checkpoints the first is still writing. The second process
therefore stops at once with one line, before it touches anything.

The lock is an OS file lock (``filelock``): the operating system releases it when the process ends,
SIGKILL included, so it never goes stale. It is reentrant within a process (the pipeline holds it
across its stages, each stage takes it again). Under torchrun or ``accelerate launch`` every rank runs
the same stage, so only the main rank (``RANK`` 0 or unset) takes it; that holds for the distributed stages (SFT
and GRPO) only, and a hold for any other work is refused on the other ranks (:func:`refuse_on_worker_rank`).

Beside the lock, the holder leaves :data:`OWNER_FILE` (its pid, command line and start time), so that a
refusal can say *which* process to wait for: "in use by another conrec process" alone left the user
hunting through their terminals and job queue. The record is a courtesy, never the lock: it is read on
refusals only, and ignored when missing, unreadable or left by a process that is gone.

A refusal's note that a stage is running (:func:`held_elsewhere`) can only test the lock by taking it, for an instant
when it is free; a shared flock would not help, since it conflicts with the writer's exclusive one just the same. So a
writer (and the probe itself) tries for :data:`CONTENTION_TRIES` × :data:`CONTENTION_PAUSE_S` before it concludes
that the run is held: an instant's probe never refuses it, a running stage (held throughout) still does.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from conrec.errors import ConfigError, RunInUseError

LOCK_FILE = ".conrec.lock"
OWNER_FILE = ".conrec.lock.owner"  # who holds LOCK_FILE: {"pid", "command", "since"}; read on refusals only
_MAX_COMMAND = 160  # characters of the holder's command line a refusal quotes
CONTENTION_TRIES = 20  # attempts at a lock found taken before it counts as held (see the module's docstring)
CONTENTION_PAUSE_S = 0.01  # between them: 0.2 s in all, far longer than a probe's hold, far shorter than a stage's
_pause = time.sleep  # (tests replace it to act between two attempts)


def world_size() -> int:
    """The processes of this launch as torchrun / accelerate set them (``WORLD_SIZE``; 1 without a launcher), known
    before any process group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> str:
    """This process's rank in its launch: ``RANK``, else ``LOCAL_RANK`` (a launcher that sets only that one), else 0."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))


def is_worker_rank() -> bool:
    """A distributed launch's process other than the main one (its :func:`rank`, from ``RANK`` or ``LOCAL_RANK``, is not
    0 in a :func:`exported_world_size` above 1): it neither holds the run nor writes its records; the main rank does
    both for the launch."""
    return exported_world_size() > 1 and rank() != "0"  # a lone process with a stray RANK is the main one


def exported_world_size() -> int:
    """The processes of the launch this process is one of, whoever exported them: ``WORLD_SIZE`` where it is set
    together with a rank (``RANK`` or ``LOCAL_RANK``: torchrun, ``accelerate launch``, deepspeed, and schedulers that
    export them for every command of a job), else 1. Compare :func:`launcher_world_size`: the launchers only."""
    return world_size() if "RANK" in os.environ or "LOCAL_RANK" in os.environ else 1


ACCELERATE_PRECISION_VARIABLE = "ACCELERATE_MIXED_PRECISION"
"""What ``accelerate launch --mixed_precision`` (or its config file) sets in every process it starts."""

LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", ACCELERATE_PRECISION_VARIABLE)
"""Variables only the launchers set for the processes they start: torchrun's elastic agent (which ``accelerate launch``'s
multi-process modes go through) sets ``TORCHELASTIC_RUN_ID``; ``accelerate launch`` sets ``ACCELERATE_MIXED_PRECISION``
in every mode (its deepspeed and MPI ones included)."""


def launcher_world_size() -> int:
    """The processes torchrun or ``accelerate launch`` started, this one among them (:data:`LAUNCHER_VARIABLES` with
    ``WORLD_SIZE``), else 1.

    Why not ``WORLD_SIZE`` with a rank alone (:func:`exported_world_size`): SLURM job scripts, Kubeflow and AzureML set
    those for every command of a job, a lone ``conrec data`` or ``conrec eval`` included, which was then refused as
    "started by a launcher"."""
    return world_size() if any(name in os.environ for name in LAUNCHER_VARIABLES) else 1


class LaunchedError(ConfigError):
    """Work that runs in one process was started as several processes of a launch."""


def refuse_under_launcher(what: str, then: str = "") -> None:
    """Raise :class:`LaunchedError` when torchrun or ``accelerate launch`` started this process as one of several
    (:func:`launcher_world_size`): ``what`` ("conrec eval") runs in one process. ``then``: what to do, where more than
    "run it without the launcher". The CLI's check, for its commands; a library caller's is :func:`refuse_on_worker_rank`.

    Why: every process of ``torchrun -m conrec.cli demo`` ran the data and SID stages, a worker (which skipped the run
    lock) rebuilt data/ while the main process read it, and the launch died at SFT with a false "rebuilt or removed";
    under ``torchrun -m conrec.cli eval`` both processes decoded every model and wrote all of eval/ to the same paths."""
    n = launcher_world_size()
    if n <= 1:
        return
    raise LaunchedError(
        f"{what} runs in one process, and this is process {rank()} of {n} started by torchrun or accelerate launch "
        f"(WORLD_SIZE={n}); only `conrec sft` and `conrec grpo` (or `-m conrec.llm.training.sft|grpo`) run as several "
        f"processes: run it without the launcher{then}"
    )


def refuse_on_worker_rank(what: str) -> None:
    """Raise :class:`LaunchedError` on a launch's process other than the main one (:func:`is_worker_rank`): ``what``
    ("the data stage") runs in one process, and the main one (rank 0) may run it.

    Why only there: a worker skips the run lock and wrote the run directory beside the main process; the main one
    holds the lock, so its run is safe, and refusing it broke a user's own torchrun script that runs the data stage
    on rank 0 before SFT on every rank, and a scheduler's job (SLURM, Kubeflow) that exports ``RANK=0``."""
    if is_worker_rank():
        raise LaunchedError(
            f"{what} runs in one process, and this is process {rank()} of {world_size()} ({_rank_variable()}, WORLD_SIZE); "
            "run it in the main process (rank 0) only, or without a launcher"
        )


def _rank_variable() -> str:
    """The variable :func:`rank` read: ``RANK``, else ``LOCAL_RANK``."""
    return "RANK" if "RANK" in os.environ else "LOCAL_RANK"


class RunReadOnlyError(ConfigError):
    """The run directory cannot be written (a read-only mount, another user's directory): its lock cannot be taken."""


_READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def holding_run(
    root: str | os.PathLike[str], current: Callable[[], bool] | None = None, distributed: bool = False
) -> Iterator[None]:
    """Hold the run directory ``root`` (created if missing) for writing, or raise :class:`RunInUseError`, or
    :class:`RunReadOnlyError` where it cannot be written. ``current``: whether what the command would run is current
    already, asked only then, so that the refusal can say nothing needs to run (``.conrec.lock: Read-only file
    system`` alone said neither that, nor that predict, score and serve work there). ``distributed``: the work runs in
    every process of a launch, the main one holding the run for all (SFT, GRPO); other work is refused on a launch's
    worker (:func:`refuse_on_worker_rank`), before the directory is touched: a worker passed unlocked and wrote beside
    the main one."""
    if not distributed:
        refuse_on_worker_rank(f"a command that writes run directory {root}")
    if is_worker_rank():  # the main rank holds the lock for the launch
        yield
        return
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # it, or a folder above it, is a file: that was a traceback
        raise ConfigError(f"run directory {root} cannot be created: it or a folder above it is a file; give another --run-dir") from None
    lock = FileLock(root / LOCK_FILE, blocking=False, is_singleton=True, preserve_lock_file=True)
    try:
        taken = _take(lock)
    except OSError as exc:
        if exc.errno not in _READ_ONLY_ERRNOS:
            raise
        raise RunReadOnlyError(read_only_line(root, exc, current)) from None
    if not taken:
        holder = holder_description(root)
        raise RunInUseError(
            f"run directory {root} is in use by another conrec process{f' ({holder})' if holder else ''}; "
            "wait for it to finish, or use another --run-dir"
        )
    if lock.lock_counter == 1:  # this process's first hold (the lock is reentrant): say who holds it
        _remove_dead_owner_temps(root)
        _write_owner(root)
    try:
        yield
    finally:
        if lock.lock_counter == 1:  # removed while still held, so it never deletes the next holder's record
            _remove_owner(root)
        lock.release()


def read_only_line(root: Path, exc: OSError, current: Callable[[], bool] | None) -> str:
    """The refusal for a run directory whose lock cannot be written (``exc``): what it means, and what to do."""
    why = exc.strerror or str(exc)
    what = (
        "every stage this command would run is current, so nothing needs to run"
        if current is not None and current()
        else "this command writes to it; copy it (cp -a) and work on the copy"
    )
    return (
        f"run directory {root} cannot be written ({LOCK_FILE}: {why}): {what}; "
        "conrec predict, score and serve work on it as it is (with -o FILE for a whole split or batch)"
    )


def _take(lock: FileLock) -> bool:
    """Take ``lock`` (non-blocking), trying :data:`CONTENTION_TRIES` times :data:`CONTENTION_PAUSE_S` apart; False when
    it was taken at every try.

    Why: :func:`held_elsewhere` takes the lock for an instant to test it, and a writer starting in that instant was
    refused (with no holder named: a probe writes no record); in a loop of refusals, 567 of 2000 writer starts were."""
    for attempt in range(CONTENTION_TRIES):
        try:
            lock.acquire()
        except Timeout:
            if attempt + 1 < CONTENTION_TRIES:
                _pause(CONTENTION_PAUSE_S)
            continue
        return True
    return False


def _command_line() -> str:
    """This process's command line as typed (``conrec sft -c x.yaml``), cut to :data:`_MAX_COMMAND` characters."""
    text = shlex.join(command_words(sys.argv, getattr(sys, "orig_argv", None)))
    return text if len(text) <= _MAX_COMMAND else text[: _MAX_COMMAND - 1] + "…"


def command_words(argv: list[str], orig_argv: list[str] | None) -> list[str]:
    """The words of a command line as typed, from ``sys.argv`` and the interpreter's ``sys.orig_argv`` (pure).

    Why: under ``python -m conrec.cli sft -c x`` ``sys.argv[0]`` is the module's file, and the owner record said
    ``cli.py sft -c x``; under ``python -c CODE``, just ``-c``. ``-m conrec.cli`` is shown as the ``conrec`` command it
    is; another module as ``python -m module ...``; ``-c`` code with its whitespace runs made single spaces (one line)."""
    args = argv[1:]
    head = orig_argv[-len(argv) - 1 :] if orig_argv and argv and len(orig_argv) > len(argv) else []
    if head and head[0] == "-m" and head[2:] == args:
        return ["conrec", *args] if head[1] == "conrec.cli" else ["python", "-m", head[1], *args]
    if head and head[0] == "-c" and head[2:] == args:
        return ["python", "-c", " ".join(head[1].split()), *args]
    return [Path(argv[0]).name if argv and argv[0] else "python", *args]


def _write_owner(root: Path) -> None:
    """Record this process as the holder (best effort: a run directory that takes the lock but not this file
    still works, its refusals just cannot name the holder)."""
    since = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    tmp = _owner_temp(root, os.getpid())
    try:
        tmp.write_text(json.dumps({"pid": os.getpid(), "command": _command_line(), "since": since}))
        os.replace(tmp, root / OWNER_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)


def _owner_temp(root: Path, pid: int) -> Path:
    """The temporary file :func:`_write_owner` of process ``pid`` writes its record to, then renames."""
    return root / f"{OWNER_FILE}.{pid}.tmp"


def _remove_dead_owner_temps(root: Path) -> None:
    """Remove the owner records' temporaries (:func:`_owner_temp`) of other processes; called holding the lock.

    Why: a SIGKILL between the write of a record and its rename left ``.conrec.lock.owner.<pid>.tmp`` in the run
    directory, one more each time. Only the holder of the lock writes one, and this process holds it, so one of
    another pid has no live writer (the OS released a killed writer's lock): removing it never races a write."""
    for path in root.glob(f"{glob.escape(OWNER_FILE)}.*.tmp"):
        pid = path.name[len(OWNER_FILE) + 1 : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not path.is_symlink():
            try:
                path.unlink(missing_ok=True)
            except OSError:  # best effort, as the record itself
                pass


def _remove_owner(root: Path) -> None:
    try:
        (root / OWNER_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def holder_description(root: str | os.PathLike[str]) -> str:
    """``"pid 123: `conrec sft -c x.yaml`, since 2026-12-06 16:10:02 UTC"`` for the process that recorded itself
    as holding ``root``, or "" when no live process did (no record, an unreadable one, or its process is gone)."""
    try:
        info = json.loads((Path(root) / OWNER_FILE).read_text(encoding="utf-8"))
        pid, command, since = int(info["pid"]), str(info["command"]), str(info["since"])
    except (OSError, ValueError, TypeError, KeyError):
        return ""
    if pid <= 0 or pid == os.getpid() or not _alive(pid):
        return ""
    return f"pid {pid}: `{command[:_MAX_COMMAND]}`, since {since[:40]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    except OSError:
        return False
    return True


def held_elsewhere(root: str | os.PathLike[str]) -> bool:
    """Whether another process holds run directory ``root`` now (a stage is running on it); False when unknown.

    Why: with a stage retraining the run in place, ``conrec serve`` and ``conrec predict`` refused with
    "run `conrec sft`", which the running stage was doing and which a second process may not do. The probe
    takes the lock for an instant when it is free (a writer starting then tries again, :func:`_take`, as this probe
    does when it meets another's instant), and takes up to 0.2 s when it is held, so it is asked on error paths only."""
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return False
    lock = FileLock(path, blocking=False, is_singleton=True, preserve_lock_file=True)
    try:
        if not _take(lock):
            return True
    except OSError:  # e.g. a read-only copy of the run: nobody writes it
        return False
    lock.release()
    return False
