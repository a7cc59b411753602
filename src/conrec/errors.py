"""Error types users see. Each message names the offending file, column, item or field."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Any


class ConrecError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class DataValidationError(ConrecError):
    """Input data does not fit the canonical tables (missing column, bad value, unknown item...)."""


class ConfigError(ConrecError):
    """A YAML/pydantic config is malformed or names something that does not exist."""


class ModelOutputError(ConrecError):
    """A loaded model produced scores that are not finite (NaN, +inf): an answer built on them would be wrong."""


class RunInUseError(ConrecError):
    """Another conrec process is writing the same run directory (:mod:`conrec.run_lock`)."""


class StageInputError(ConrecError):
    """A stage was asked to run before the stage it depends on wrote its outputs, or they are corrupt."""


def require_columns(
    table: Any, columns: Iterable[str], what: str, error: type[ConrecError] = DataValidationError
) -> None:
    """Raise ``error`` naming every column of ``columns`` that ``table`` (anything with a
    ``.columns`` list, e.g. a polars DataFrame) lacks, and the columns it has.

    Why one helper: a table missing a column must fail before any work with the same clear
    message wherever it is read, not with a polars ``ColumnNotFoundError`` deep inside a stage.
    """
    have = list(table.columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise error(f"{what}: missing column(s) {missing}; have {have}")


WRITE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EISDIR, errno.ENOTDIR})
"""The operating-system errors a user fixes outside conrec: a read-only mount, a directory of another
user, a full disk or quota, a path that names a directory where a file goes or goes through a file."""


def os_error_line(exc: OSError) -> str | None:
    """The one-line message for an :data:`WRITE_ERRNOS` error (``<file>: <reason>``), or None for any
    other ``OSError`` (a bug, shown with its traceback). Shared by the CLI and the module entry points."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
