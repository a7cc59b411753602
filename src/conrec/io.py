"""Atomic file output: write to a temporary sibling, then rename.

Why: a crashed or interrupted stage must never leave a half-written Parquet/JSON file that a later
stage (or a rerun that skips "finished" work) would trust.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from conrec.errors import WRITE_ERRNOS, ConfigError, StageInputError, causeless_write_failure, write_failure

if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover
    fcntl = None

TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp|\.staging-[a-z0-9_]{8}")
"""The name of :func:`atomic_path`'s (and :func:`locked_temp_dir`'s) temporary directory: ``.<name>.`` + the 8
characters :func:`tempfile.mkdtemp` draws + ``.tmp`` (what :func:`remove_stray_temps` removes, and nothing else); or
``.staging-`` + 8 characters, the data stage's staging directory before it was a :func:`locked_temp_dir` (made while
its stage held the run, so one left is never a write in progress for the stage that holds it now)."""


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Works for files and for directories (e.g. a Hugging Face model dir). On error the temporary
    path is removed and ``path`` is left untouched; a full disk or a read-only directory names ``path``
    (:func:`naming_write_failures`, :func:`_naming_outputs`), not the temporary. A SIGKILL leaves it (:data:`TEMP_NAME`): the stage that
    next holds the run removes it (:func:`remove_stray_temps`); while the write goes on, its lock (:data:`WRITING`)
    keeps it.
    """
    final = Path(path)
    with naming_write_failures(final), locked_temp_dir(final.parent, final.name) as tmp:
        target = tmp / final.name
        yield target
        if final.is_dir() and not final.is_symlink():
            if not target.is_dir():  # a file over a directory: `--out DIR` deleted DIR, contents and all
                raise IsADirectoryError(errno.EISDIR, "is a directory; give a file path to write", str(final))
            shutil.rmtree(final)  # a model directory replaced by its new version
        os.replace(target, final)


@contextmanager
def naming_write_failures(path: str | os.PathLike[str], somewhere_inside: bool = False) -> Iterator[None]:
    """Re-raise a full disk, file size limit or quota met in the block (:func:`conrec.errors.write_failure`: a
    library's own exception type included) that names no file as an ``OSError`` naming ``path``, the original as its
    cause; any other exception passes unchanged.

    Why: the CLI says these errors in one line, ``<file>: <reason>``; safetensors, tokenizers, polars and numpy raise
    them without a file, and so do ``write()`` and ``close()``, so the line said only "No space left on device", or a
    traceback. ``somewhere_inside``: the block writes under the directory ``path`` but not only there (a stage: a
    trainer's checkpoint, and also /tmp, /dev/shm, a cache); a full disk is then blamed on ``path`` only when its disk
    is nearly full, else the line says that another disk is, so the user does not free the wrong one."""
    try:
        yield
    except Exception as exc:
        found = write_failure(exc)
        if found is None and somewhere_inside and causeless_write_failure(exc):
            found = _likely_write_failure(path)
        if found is None or found.filename:
            raise
        reason = found.strerror
        usage = _disk_usage(path) if somewhere_inside and found.errno == errno.ENOSPC else None
        if usage is not None and not _nearly_full(usage):
            reason = (
                f"{found.strerror} in a write that names no file, while this directory's disk has {usage.free / 2**30:.1f} "
                "GiB free: another disk is full (the temporary directory, /dev/shm or conrec's cache)"
            )
        raise OSError(found.errno, reason, str(path)) from exc


def _likely_write_failure(path: str | os.PathLike[str]) -> OSError | None:
    """The likely cause of a write under ``path`` that PyTorch's writer failed without one: ``path``'s disk nearly
    full, else a file size limit (``ulimit -f``) on this process; None when neither holds, so that the error keeps its
    traceback (it may be something else: a failing device).

    Why: the Hugging Face trainer saves ``optimizer.pt`` and its RNG state with ``torch.save`` to a path, so a full
    disk during an SFT or GRPO checkpoint was a traceback ending in "inline_container.cc ... unexpected pos"."""
    usage = _disk_usage(path)
    if usage is not None and _nearly_full(usage):
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (PyTorch's file writer failed without a cause; this disk is nearly full)")
    try:
        import resource
    except ImportError:  # not on Unix: no file size limit to check
        return None
    if (limit := resource.getrlimit(resource.RLIMIT_FSIZE)[0]) != resource.RLIM_INFINITY:
        return OSError(
            errno.EFBIG,
            f"{os.strerror(errno.EFBIG)} (PyTorch's file writer failed without a cause; a file size limit, ulimit -f, is set: "
            f"{limit:,} bytes)",
        )
    return None


def _nearly_full(usage: Any) -> bool:
    """Whether a disk (``shutil.disk_usage``) has less than 64 MiB or 1% free: what a failed write there is blamed on."""
    return bool(usage.free < max(64 * 2**20, usage.total // 100))


def _disk_usage(path: str | os.PathLike[str]) -> Any:
    """``shutil.disk_usage`` of the disk holding ``path`` (or its nearest existing parent); None when it cannot be told."""
    here = Path(path)
    while not here.exists() and here != here.parent:
        here = here.parent
    try:
        return shutil.disk_usage(here)
    except OSError:
        return None


@contextmanager
def _naming_outputs(folder: Path, name: str) -> Iterator[None]:
    """Re-raise a write error (:data:`conrec.errors.WRITE_ERRNOS`, or :func:`conrec.errors.write_failure`) that names
    a file in :func:`locked_temp_dir`'s temporary ``folder/.<name>.XXXXXXXX.tmp`` as the same error naming where that
    file goes: ``folder/<the rest of its path>`` (the temporary itself: ``folder/name``). Why: the hidden name
    (``.events.parquet.cm_6f0yl.tmp``) is one the user never asked for and cannot find once it is removed."""
    try:
        yield
    except Exception as exc:
        found = write_failure(exc) or (exc if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS else None)
        if found is None or not found.filename or (shown := _output_of(Path(found.filename), folder, name)) is None:
            raise
        raise OSError(found.errno, found.strerror, str(shown)) from exc


def _output_of(path: Path, folder: Path, name: str) -> Path | None:
    """Where ``path``, in :func:`locked_temp_dir`'s temporary for ``folder/name`` (or that temporary itself), goes; None
    when it lies elsewhere."""
    if not path.is_relative_to(folder) or path == folder:
        return None
    top, *rest = path.relative_to(folder).parts
    if not (top.startswith(f".{name}.") and TEMP_NAME.fullmatch(top)):
        return None
    return folder.joinpath(*rest) if rest else folder / name


@contextmanager
def locked_temp_dir(parent: str | os.PathLike[str], name: str) -> Iterator[Path]:
    """Yield a fresh hidden directory ``parent/.<name>.XXXXXXXX.tmp``, locked (:data:`WRITING`) while in use and removed
    after: scratch space for files published one by one (the data stage's staging directory), which a SIGKILL may leave
    and :func:`remove_stray_temps` then removes, but never while it is in use. :func:`atomic_path` is built on it.

    Why: the data stage's ``tempfile.mkdtemp(prefix=".staging-")`` (the run's whole new events table) stayed through
    every later run after a kill; it had neither a name the cleanup knows nor a lock telling it from a live one."""
    folder = Path(parent)
    folder.mkdir(parents=True, exist_ok=True)
    with _naming_outputs(folder, name):
        tmp, held = _locked_temp(folder / name)
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if held is not None:
                os.close(held)


WRITING = ".conrec-writing"
"""The file inside an :func:`atomic_path` temporary directory whose lock (``flock``) its writer holds until it is done:
what tells :func:`remove_stray_temps` a write in progress from one a SIGKILL left (the OS releases a dead process's
locks)."""


def _locked_temp(final: Path) -> tuple[Path, int | None]:
    """A fresh temporary directory beside ``final`` and the descriptor of its :data:`WRITING` file, locked (None
    where there is no ``flock``: Windows).

    Why the check after locking: :func:`remove_stray_temps` may find the directory between its creation and the lock;
    it removes a directory only while it holds that lock, so once this lock is ours the directory is either still
    there (and no remover will take it now) or gone, and then another is made."""
    while True:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        if fcntl is None:  # pragma: no cover
            return tmp, None
        try:
            fd = os.open(tmp / WRITING, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # removed already
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without flock (ENOLCK, EOPNOTSUPP): write unlocked; the remover skips it
            os.close(fd)
            return tmp, None
        try:
            if os.stat(tmp / WRITING).st_ino == os.fstat(fd).st_ino:
                return tmp, fd
        except FileNotFoundError:
            pass
        os.close(fd)


def remove_stray_temps(directory: str | os.PathLike[str], only: Collection[str] | None = None) -> int:
    """Remove the temporary directories :func:`atomic_path` left anywhere under ``directory`` (:data:`TEMP_NAME`; links
    are neither removed nor followed); return how many. A write in progress holds its directory's lock
    (:data:`WRITING`), so its directory stays, whoever writes it: commands that take no run lock (`conrec predict
    --split` and `conrec score --batch` write under ``eval/predictions/``) included. Without ``flock`` (Windows)
    nothing is removed. ``only``: the temporaries of writes of these files, directly in ``directory`` (the run
    directory, which may hold what conrec did not write), and nothing deeper.

    Why: a SIGKILL (OOM killer, a preempted job) during a save left ``sft/.model.XXXXXXXX.tmp`` (up to a whole model)
    that nothing removed; each kill added one, and a copy of the run for serving copied them along."""
    if fcntl is None:  # pragma: no cover
        return 0
    removed = 0
    for here, dirs, _files in os.walk(directory):
        names = [d for d in dirs if TEMP_NAME.fullmatch(d) and (only is None or any(d.startswith(f".{f}.") for f in only))]
        for name in names:
            dirs.remove(name)  # never walked into
            path = Path(here) / name
            if not path.is_symlink() and _remove_unless_written(path):
                removed += not path.exists()
        if only is not None:
            break
    return removed


def _remove_unless_written(path: Path) -> bool:
    """Remove ``path``, an :func:`atomic_path` temporary directory, unless its writer holds its lock; whether it tried.
    The lock is held while removing, so a writer that has just made the directory cannot take it meanwhile
    (:func:`_locked_temp`)."""
    assert fcntl is not None
    try:  # made here when the kill came before the writer made it
        fd = os.open(path / WRITING, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:  # gone meanwhile, or not ours to open
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: a write in progress; any other: no flock here, so no telling: kept
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def check_output_file(
    path: str | os.PathLike[str], what: str, example: str = "out.parquet", suffix: str | None = None, hint: str = ""
) -> Path:
    """``path`` as a file conrec may write, checked before any work: not an existing directory (it was
    replaced by the file, contents and all), not under a file (a traceback after the work was done), and in a directory
    this process may write (``conrec predict --split`` on a read-only run decoded the whole split, then stopped on its
    temporary file). ``example``: a file name of the kind written, suggested inside a directory given instead; ``suffix``
    (e.g. ``.parquet``): the one the file must have (``--out x.csv`` got Parquet bytes under a CSV name); ``hint``: what
    to do instead when it cannot be written (``; pass -o FILE``)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a directory; give a file path (e.g. {p / example})")
    if suffix is not None and p.suffix.lower() != suffix:
        kind = suffix.lstrip(".").capitalize()
        raise ConfigError(f"{what} {p}: the file written is {kind}, so its name must end in {suffix} (e.g. {p.with_suffix(suffix)})")
    above = next((a for a in p.absolute().parents if a.exists()), None)
    if above is not None and not above.is_dir():
        raise ConfigError(f"{what} {p} cannot be written: {above} is a file, not a directory")
    if above is not None and (why := unwritable(above)) is not None:
        raise ConfigError(f"{what} {p} cannot be written: {above} is {why}{hint}")
    return p


def unwritable(directory: Path) -> str | None:
    """Why this process cannot write in ``directory`` ("on a read-only file system", "not writable by this user"), or
    None when it can. As root, only a read-only mount says no."""
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    return "on a read-only file system" if _read_only_mount(directory) else "not writable by this user"


def _read_only_mount(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only (False where that cannot be told)."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 0))
    except (OSError, AttributeError):  # no statvfs (Windows)
        return False


def cache_home() -> Path:
    """conrec's cache on this machine: ``$CONREC_CACHE``, else ``$XDG_CACHE_HOME/conrec``, else ``~/.cache/conrec``.

    One root for every cache conrec keeps: the converted models (:func:`conrec.llm.model.backbones.cache_root`) and the
    item vectors (:func:`conrec.sid.encoder.default_cache_dir`), so the variables that move one move both (the vectors
    stayed in ``~/.cache``, and a read-only home failed the sid stage though ``$CONREC_CACHE`` was set)."""
    if os.environ.get("CONREC_CACHE"):
        return Path(os.environ["CONREC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "conrec"


def write_parquet(df: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return Path(path)


def read_parquet(
    path: str | os.PathLike[str], what: str = "table", columns: list[str] | None = None, where: pl.Expr | None = None
) -> pl.DataFrame:
    """Read a Parquet file (``columns``: only those; ``where``: only the rows it holds for, filtered while scanning, so a
    few users' rows of a large table never hold the whole table in memory), turning missing/corrupt files into a clear
    :class:`StageInputError`."""
    p = Path(path)
    if not p.exists():
        raise StageInputError(f"{what} not found: {p.absolute()} (run the stage that writes it first)")
    try:
        if where is not None:
            scan = pl.scan_parquet(p)
            return (scan.select(columns) if columns is not None else scan).filter(where).collect()
        return pl.read_parquet(p, columns=columns)
    except Exception as exc:  # polars raises several types for corrupt files
        raise StageInputError(f"{what} at {p} is not a readable Parquet file: {exc}") from exc


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    p = Path(path)
    if not p.exists():
        raise StageInputError(f"{what} not found: {p.absolute()}")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise StageInputError(f"{what} at {p} is not valid JSON: {exc}") from exc


def write_npy(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a bare temporary name
            np.save(fh, array)
    return Path(path)


def write_torch(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` of ``obj``, atomically, through a Python file object.

    Why the file object: given a path, PyTorch writes through its own C++ writer, whose full disk or file size
    limit is a ``RuntimeError`` with no errno ("[enforce fail at inline_container.cc] . unexpected pos"), a
    traceback; through a file object the write is Python's and raises the ``OSError``, which names ``path`` in one
    line. PyTorch then fails again closing its archive, with that ``RuntimeError``: the ``OSError`` before it is raised."""
    import torch  # here, not at the top: the data engines import this module and need no torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as exc:
                if isinstance(exc.__context__, OSError):  # the write's own error, which the archive's close hid
                    raise exc.__context__ from exc
                raise
    return Path(path)


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` as UTF-8 (whatever the machine's locale: configs are read as UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def update_text(text: str, path: str | os.PathLike[str]) -> bool:
    """:func:`write_text`, unless ``path`` holds ``text`` already; whether it wrote.

    Why: a ``conrec demo`` on a run whose every stage is current rewrote its ``config.yaml`` with the same text, so on a
    full disk it failed having nothing to do (and a rewrite for nothing changes the file's time)."""
    p = Path(path)
    try:
        if p.is_file() and p.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):  # unreadable: rewritten
        pass
    write_text(text, p)
    return True


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
