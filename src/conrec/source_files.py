"""The state of the files a stage reads from outside the run directory (the user's events and items,
a local encoder or backbone: ``Stage.source_files``).

Why: a stage is reused while its configuration is unchanged. But the configuration names the user's
files by path, and an export is often fixed or refreshed in place: same path, other rows. Without a
record of the files, ``conrec demo`` would skip every stage and report the old run's results as if
they were the new data's. A stage therefore records each file's size, modification time and, while
a path's files hold at most :data:`HASH_MAX_BYTES` in all, their SHA-256; the stage, and every stage
built on it, is stale once a file differs.

The check is cheap when nothing changed (one ``stat`` per file). A file whose time changed but whose
size did not (a copy, ``touch``) is hashed again, so it counts as changed only if its bytes did;
beyond the hash limit (a log at scale: hashing it would cost minutes) a new time alone counts as a
change. A file that is gone is not a change: a run stays usable after the raw export is deleted or
the run directory is copied to another machine.

Standard library only: :mod:`conrec.runs` imports it on every reuse check.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

HASH_MAX_BYTES = 256 * 2**20
"""A path's files are hashed while they hold this much in all (256 MiB, about a second); beyond, size and time only."""


def _files(path: Path) -> list[tuple[str, Path]]:
    """(name relative to ``path``, file) for a file, or for every file below a directory, sorted."""
    if path.is_file():
        return [(path.name, path)]
    return sorted((str(f.relative_to(path)), f) for f in path.rglob("*") if f.is_file())


def _sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """Cached by the file's size and times: a run's checks ask about the same files once per stage. The change
    time too: a rewrite of the same size with its modification time set back (``os.utime``) moves it."""
    del size, mtime_ns, ctime_ns  # the cache key only
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(path: Path) -> list[list[Any]]:
    files = [(name, f, f.stat()) for name, f in _files(path)]
    hashed = sum(st.st_size for _, _, st in files) <= HASH_MAX_BYTES
    return [[name, st.st_size, st.st_mtime_ns, _sha256(f) if hashed else None] for name, f, st in files]


def snapshot(paths: dict[str, str | os.PathLike[str] | None]) -> dict[str, dict[str, Any]]:
    """``{key: {"path": absolute path, "files": [[name, size, mtime_ns, sha256 or None], ...]}}`` for
    each key whose path is set and exists (a missing file fails in the stage itself, with its own message)."""
    out: dict[str, dict[str, Any]] = {}
    for key, raw in paths.items():
        if raw is None or not Path(raw).exists():
            continue
        path = Path(raw).resolve()
        out[key] = {"path": str(path), "files": _entries(path)}
    return out


def content_stamp(path: str | os.PathLike[str]) -> str:
    """A digest of the files at ``path`` (a file, or every file below a directory, subdirectories too): their
    names, sizes and SHA-256, or beyond :data:`HASH_MAX_BYTES` their sizes and times. Equal while the contents
    are; for caches keyed by what a local model directory holds."""
    rows = [[name, size, sha if sha is not None else mtime_ns] for name, size, mtime_ns, sha in _entries(Path(path))]
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:12]


def _file_changed(entry: list[Any], path: Path) -> bool:
    _name, size, mtime_ns, sha = entry
    st = path.stat()
    if st.st_size != size:
        return True
    if st.st_mtime_ns == mtime_ns:
        return False
    return sha is None or _sha256(path) != sha


def _recorded_file(rec: dict[str, Any], name: str) -> Path:
    """The recorded path of the file ``name`` of a :func:`snapshot` entry: the path itself for a file, else below it."""
    root = Path(rec["path"])
    return root if len(rec["files"]) == 1 and root.name == name else root / name


def _content_differs(entry: list[Any], path: Path) -> str | None:
    """How the file at ``path`` (another path than the recorded one) differs in content from the recorded
    ``entry``, or None if its size and SHA-256 are the same. Why a reason and not a flag: the message must say that
    the *content* differs; the other path alone (a copied project) is fine and was read as the cause."""
    _name, size, _mtime_ns, sha = entry
    now_size = path.stat().st_size
    if now_size != size:
        return f"{now_size:,} bytes, not {size:,}"
    if sha is None:
        return f"the recorded file was too large to hash (over {HASH_MAX_BYTES // 2**20} MiB), so a file elsewhere cannot be shown to be the same"
    return None if _sha256(path) == sha else "same size, other SHA-256"


def change(recorded: dict[str, dict[str, Any]], current: dict[str, Any] | None = None) -> str | None:
    """Why the files of a :func:`snapshot` differ now (named), or None if they do not, or are gone.

    ``current``: the paths the configuration names now, by the same keys (None: the recorded ones). A path
    other than the recorded one (a project directory copied or moved) is compared by content: the same file
    names, sizes and SHA-256; a log too large to have been hashed counts as changed."""
    for key, rec in recorded.items():
        now_path = (current or {}).get(key)
        path = Path(now_path).resolve() if now_path is not None else Path(rec["path"])
        moved = str(path) != rec["path"]
        if not path.exists():  # the recorded files gone (an export deleted, the run copied elsewhere): still usable
            if moved:
                return f"made from {rec['path']}; {path} does not exist"
            continue
        now = dict(_files(path))
        names = [e[0] for e in rec["files"]]
        if sorted(now) != sorted(names):
            if moved:
                return f"{path} differs in its file names from {rec['path']}, which the run was made from (a file added, removed or renamed)"
            return f"made from {path}, whose files were added or removed since"
        for entry in rec["files"]:
            if moved and (why := _content_differs(entry, now[entry[0]])) is not None:
                return f"{now[entry[0]]} differs in content from {_recorded_file(rec, entry[0])}, which the run was made from ({why})"
            if not moved and _file_changed(entry, now[entry[0]]):
                return f"made from {now[entry[0]]}, which changed since"
    return None
