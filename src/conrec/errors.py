"""Error types users see. Each message names the offending file, column, item or field."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Iterator, Sequence
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


WRITE_ERRNOS = frozenset(
    {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EISDIR, errno.ENOTDIR}
)
"""The operating-system errors a user fixes outside conrec: a read-only mount, a directory of another
user, a full disk or quota, a file size limit (``ulimit -f``), a path that names a directory where a file goes or
goes through a file."""

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
"""The errors only a write gives: no space, a file size limit, a quota (what :func:`write_failure` looks for in the
text of a library's own exception)."""

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
"""How Rust's ``io::Error`` ends its text (safetensors, tokenizers, polars): ``No space left on device (os error 28)``;
the number is the platform's errno, so it is compared with :mod:`errno`'s values, never with fixed numbers."""

_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")
"""numpy's ``ndarray.tofile`` (``np.save``) when ``fwrite`` wrote less than asked: an ``OSError`` with no errno."""


_TORCH_WRITER = re.compile(r"inline_container\.cc:\d+\] \. unexpected pos|PytorchStreamWriter failed writing file")
"""PyTorch's own file writer (``torch.save`` given a path, as the Hugging Face trainer saves ``optimizer.pt``,
``scheduler.pt`` and its RNG state) when a write fails: a ``RuntimeError`` that gives no cause."""


def os_error_line(exc: OSError) -> str | None:
    """The one-line message for an :data:`WRITE_ERRNOS` error (``<file>: <reason>``), or None for any
    other ``OSError`` (a bug, shown with its traceback). Shared by the CLI and the module entry points."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def write_failure(exc: BaseException) -> OSError | None:
    """The full disk, file size limit or quota behind ``exc``, as an ``OSError`` with its errno and reason (and the file
    it names, if any), or None when ``exc`` is anything else.

    Looked for in ``exc`` and the exceptions it was raised from (``raise ... from``): an ``OSError`` with
    one of :data:`FULL_ERRNOS`; an exception whose text ends a Rust I/O error with one of them (safetensors'
    ``SafetensorError``, the bare ``Exception`` of tokenizers, polars' ``ComputeError``); numpy's short write.

    Why: the libraries that write models and tables raise their own types, so a full disk during training ended in
    a 60-line traceback where a read-only directory gave one line. Narrow on purpose: only these three causes, which
    no read gives, so no other error is taken for one."""
    for seen in _chain(exc):
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return seen
        if isinstance(seen, OSError) and seen.errno is None and (short := _SHORT_WRITE.fullmatch(str(seen))):
            wanted, written = short.groups()
            return OSError(
                errno.ENOSPC, f"short write ({written} of {wanted} bytes written): the disk is full or a file size limit "
                "(ulimit -f) was reached"
            )
        for code in (int(c) for c in _RUST_OS_ERROR.findall(str(seen))):
            if code in FULL_ERRNOS:
                return OSError(code, os.strerror(code))
    return None


def causeless_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is PyTorch's writer failing a write without saying why.

    Why apart from :func:`write_failure`: the cause (a full disk, a file size limit, or a failing device) is not in
    the error, so only a caller that knows where the write went can check the likely ones
    (:func:`conrec.io.naming_write_failures`)."""
    return any(isinstance(seen, RuntimeError) and _TORCH_WRITER.search(str(seen)) for seen in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from (``__cause__``), each once (a cycle ends the walk). Not what it was
    raised while handling (``__context__``): a bug in an ``except`` block must not be taken for the error it handled."""
    seen: set[int] = set()
    here: BaseException | None = exc
    while here is not None and id(here) not in seen:
        seen.add(id(here))
        yield here
        here = here.__cause__


def write_error_line(exc: BaseException) -> str | None:
    """The one-line message for an error a user fixes outside conrec: an :data:`WRITE_ERRNOS` ``OSError``
    (:func:`os_error_line`) or a library's full-disk error (:func:`write_failure`: ``<reason> (<its type>)``, the
    file it names when it names one), or None for any other exception (a bug, shown with its traceback)."""
    if isinstance(exc, OSError) and (line := os_error_line(exc)) is not None:
        return line
    found = write_failure(exc)
    return None if found is None else f"{os_error_line(found)} ({type(exc).__name__} while writing)"


def install_hint(pip: str, extra: str | None = None) -> str:
    """``pip`` in backticks, then (``extra``) the checkout's extra as a second command: each backticked text is one
    command that pastes into a shell (the alternative inside the backticks made the whole a syntax error). ``pip``
    names the packages themselves, which works in an installed conrec too: conrec is not on PyPI, so
    ``pip install 'conrec[<extra>]'`` resolves only where conrec is already installed, and ``-e '.[<extra>]'`` only in
    a checkout."""
    hint = f"`{pip}`"
    return hint + (f" (or, from a conrec checkout: `pip install -e '.[{extra}]'`)" if extra else "")


def spoken_list(words: Sequence[str]) -> str:
    """``words`` as a message lists them: ``a``, ``a and b``, ``a, b and c`` (empty for none). Why one: six messages
    spelt it each their own way."""
    if len(words) < 2:
        return "".join(words)
    return f"{', '.join(words[:-1])} and {words[-1]}"
