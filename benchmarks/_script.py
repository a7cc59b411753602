"""What the benchmark scripts share (imported by them; not a benchmark): how they end, however they are
stopped, and how they check names given on the command line.

* SIGTERM (``kill PID``, ``timeout``, a cancelled CI job) is handled like Ctrl-C: a ``KeyboardInterrupt``
  in the main thread, so every ``finally`` and context manager runs (a server stopped, a temp dir removed).
  A second signal is ignored, so it cannot cut that cleanup short.
* A child started with :func:`popen` or :func:`run` runs in a process group of its own. The first
  SIGINT/SIGTERM sends SIGTERM to every such group (children in worker threads included), and leaving
  :func:`popen` stops a child still running: SIGTERM to its group, SIGKILL after ``grace`` seconds.
* :func:`main` prints an interrupt or a conrec error (no such run, a missing table) as one line, not a traceback.
* :func:`names` and :func:`positive` are argparse types (a one-line usage error before any work, not a traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_live: set[subprocess.Popen] = set()
_lock = threading.RLock()  # RLock: the handler runs in the main thread, which may hold it
_interrupted = False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _on_signal(signum: int, frame: object) -> None:
    global _interrupted
    if _interrupted:
        return
    _interrupted = True
    with _lock:
        running = [p for p in _live if p.returncode is None]
    for proc in running:
        _signal_group(proc, signal.SIGTERM)
    raise KeyboardInterrupt


def install() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt (once) after signalling every child's group (main thread only)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


@contextmanager
def popen(cmd: list[str], grace: float = 15.0, **kwargs: Any) -> Iterator[subprocess.Popen]:
    """``subprocess.Popen`` in a new process group, stopped with its group when the block is left while it runs."""
    with subprocess.Popen(cmd, start_new_session=True, **kwargs) as proc:
        with _lock:
            _live.add(proc)
        try:
            yield proc
        finally:
            try:
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGTERM)
                    try:
                        proc.wait(grace)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc, signal.SIGKILL)
                        proc.wait()
            finally:
                with _lock:
                    _live.discard(proc)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` (no ``check``) through :func:`popen`."""
    with popen(cmd, **kwargs) as proc:
        out, err = proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def main(fn: Callable[[], object]) -> int:
    """Run a script's ``main`` with :func:`install`; the exit status (``fn``'s when it is an int, else 0)."""
    from conrec.errors import ConrecError

    install()
    try:
        rc = fn()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ConrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0


def names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated, non-empty list of names from ``allowed``."""

    def parse(text: str) -> list[str]:
        given = [x for x in text.split(",") if x]
        unknown = [x for x in given if x not in allowed]
        if not given or unknown:
            raise argparse.ArgumentTypeError(f"unknown name(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}")
        return given

    return parse


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value
