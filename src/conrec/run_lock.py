"""One writer per run directory: the lock every stage holds while it runs.

Why: two conrec processes writing one run directory (a second terminal, a retried job) interleave
their outputs and the records of which configuration made them. One process's model could then be
recorded as made with the other's configuration, and served as current; and a stage started with
another configuration discards the checkpoints the first is still writing. The second process
therefore stops at once with one line, before it touches anything.

The lock is an OS file lock (``filelock``): the operating system releases it when the process ends,
SIGKILL included, so it never goes stale. It is reentrant within a process (the pipeline holds it
across its stages, each stage takes it again). Under torchrun or ``accelerate launch`` every rank runs
the same stage, so only the main rank (``RANK`` 0 or unset) takes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from conrec.errors import ConfigError, RunInUseError

LOCK_FILE = ".conrec.lock"


def world_size() -> int:
    """The processes of this launch as torchrun / accelerate set them (``WORLD_SIZE``; 1 without a launcher), known
    before any process group exists."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_worker_rank() -> bool:
    """A distributed launch's process other than the main one (torchrun / accelerate set ``RANK``): it neither
    holds the run nor writes its records; the main rank does both for the launch."""
    return world_size() > 1 and os.environ.get("RANK", "0") != "0"  # a lone process with a stray RANK is the main one


@contextmanager
def holding_run(root: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the run directory ``root`` (created if missing) for writing, or raise :class:`RunInUseError`."""
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
        lock.acquire()
    except Timeout:
        raise RunInUseError(
            f"run directory {root} is in use by another conrec process; wait for it to finish, or use another --run-dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def held_elsewhere(root: str | os.PathLike[str]) -> bool:
    """Whether another process holds run directory ``root`` now (a stage is running on it); False when unknown.

    Why: with a stage retraining the run in place, ``conrec serve`` and ``conrec predict`` refused with
    "run `conrec sft`", which the running stage was doing and which a second process may not do. The probe
    takes the lock for an instant when it is free, so it is asked on error paths only."""
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return False
    lock = FileLock(path, blocking=False, is_singleton=True, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # e.g. a read-only copy of the run: nobody writes it
        return False
    lock.release()
    return False
