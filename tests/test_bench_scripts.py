"""The scripts under ``benchmarks/``: they clean up when stopped, validate their arguments before any work and
measure what they say (found by probing them; their speed figures are not asserted anywhere)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def bench(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A benchmark script imported as a module (the scripts import their sibling ``_cleanup``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def _children(pid: int) -> list[int]:
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        out += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_to_threads_stops_its_concurrent_trainer(tmp_path: Path) -> None:
    """``kill PID`` of threads.py while its concurrent trainer ran left that infinite loop running (re-parented to
    init). Here the measurements are stubbed: the script is stopped in its first measurement beside the trainer."""
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(BENCH)!r})
        import threads
        calls = []
        def child(stage, run_dir, t, args):
            calls.append(stage)
            if len(calls) > 6:  # the first measurement beside the trainer
                print("READY", flush=True)
                time.sleep(60)
            return {{"stage": stage, "threads": 1, "seconds": 1.0, "per_unit": 1.0, "unit": "step"}}
        threads.prepare = lambda run_dir: None
        threads._child = child
        main = lambda: threads.main([])
        sys.exit(threads._cleanup.main(main) if hasattr(threads, "_cleanup") else main())
    """))
    proc = subprocess.Popen([sys.executable, str(driver)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    trainers: list[int] = []
    try:
        assert proc.stdout is not None
        assert "READY\n" in iter(proc.stdout.readline, "")  # rows of the stubbed measurements alone come first
        trainers = [c for c in _children(proc.pid) if "torch.optim" in Path(f"/proc/{c}/cmdline").read_text()]
        assert trainers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        for _ in range(50):  # the trainer is reaped by the script before it exits; a survivor would be re-parented
            if not any(_alive(t) for t in trainers):
                break
            time.sleep(0.1)
        assert not any(_alive(t) for t in trainers)
    finally:
        for pid in [*trainers, proc.pid]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
