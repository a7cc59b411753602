"""conrec.runtime.signal_handlers: the one way conrec swaps signal handlers for a block (the CLI's SIGTERM, a serve
worker's load, the server's SIGHUP)."""

from __future__ import annotations

import signal
import threading

from conrec.runtime import signal_handlers


def test_handlers_hold_within_the_block_and_the_found_ones_come_back() -> None:
    def mine(signum: int, frame: object) -> None:
        return None

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    with signal_handlers({signal.SIGTERM: mine, signal.SIGHUP: signal.SIG_IGN}):
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_outside_the_main_thread_nothing_changes_and_nothing_raises() -> None:
    """signal.signal raises ValueError outside the main thread; a library caller's worker thread must not fail."""
    seen: list[object] = []

    def body() -> None:
        with signal_handlers({signal.SIGTERM: signal.SIG_IGN}):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen == [before] and signal.getsignal(signal.SIGTERM) == before
