"""Fixtures shared by several test modules, and the hooks that run the suite on pytest-xdist workers.

Plain builders (functions called with arguments) live in ``builders.py`` so that tests can import
them; fixtures live here so that pytest injects them. Test modules never import each other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conrec.runs import RunDir
from conrec.serve.app import create_app
from conrec.serve.config import ServeConfig

from builders import SERVE_TEST_LIMITS, RecordingPredictor, serve_tables, write_fake_outputs


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject's addopts) starts one pytest-xdist worker per core this process may use, counted as
    conrec counts them. Why not xdist's own count: it sees a container's host cores, not its CPU quota.

    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` and ``-n logical`` keep their xdist meaning (None: xdist's own count decides)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses == "logical":
        return None
    from conrec.runtime import available_cores

    return available_cores()


_worker_threads: int | None = None  # set by pytest_configure in a pytest-xdist worker


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker: torch threads, in this process and in every command a test starts, are this worker's
    share of the cores (``OMP_NUM_THREADS``, which conrec's thread choice reads: ``conrec.runtime.choose_threads``),
    unless ``OMP_NUM_THREADS`` was set for the run (then it decides, as everywhere in conrec).

    Why: each worker would otherwise run as many threads as there are cores, and torch's threads spin-wait on each
    other, so two workers on two cores slow each other down."""
    global _worker_threads
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers > 1 and not os.environ.get("OMP_NUM_THREADS"):
        from conrec.runtime import available_cores

        _worker_threads = max(1, available_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(_worker_threads)


def pytest_collection_finish(session: pytest.Session) -> None:
    """After collection (some test modules set torch's threads when imported): a worker's tests start with its share."""
    if _worker_threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_worker_threads)


@pytest.fixture(autouse=True)
def _no_idle_cpu_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage started in this process skips the 0.3 s sample of idle CPUs that chooses torch's threads.

    Why: ``conrec.runtime.measure_idle_cpus`` sleeps 0.3 s at each stage start (and before eval's first
    announcement), and the suite starts stages in process hundreds of times, mostly fake ones: about 1.5 minutes of
    sleeping. Unknown idle CPUs (None) is what a machine without /proc gives: every core, as on a quiet machine.
    The sample's arithmetic is tested on its own (``test_runtime.py``); a test that wants a sample patches it."""
    import conrec.runtime

    monkeypatch.setattr(conrec.runtime, "measure_idle_cpus", lambda *args, **kwargs: None)


@pytest.fixture()
def serve_client() -> Callable[..., tuple[TestClient, RecordingPredictor]]:
    """A factory: ``serve_client(**serve_overrides)`` -> (client, recording predictor) over the
    hand-made serving tables, so each test sets only the limits it exercises."""

    def make(**serve: object) -> tuple[TestClient, RecordingPredictor]:
        items, sid_map, events = serve_tables()
        pred = RecordingPredictor(events, sid_map["item_id"].to_list())
        cfg = ServeConfig(**{**SERVE_TEST_LIMITS, **serve})
        return TestClient(create_app(pred, items, sid_map, events, cfg, model_name="fake"), base_url="http://localhost"), pred

    return make


@pytest.fixture()
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every stage replaced by a runner that records its name and writes the smallest valid outputs (which no
    stage's preflight could read: those checks are off)."""
    import dataclasses

    import conrec.pipeline as pipeline
    from conrec.stages import STAGE_REGISTRY

    for name, spec in STAGE_REGISTRY.items():
        monkeypatch.setitem(STAGE_REGISTRY, name, dataclasses.replace(spec, preflight=None))

    calls: list[str] = []

    def runner(stage: str):
        def run(section: Any, run_dir: Any, console: Any = None, **_: Any) -> str:  # the stage protocol
            calls.append(stage)
            rd = RunDir(run_dir)
            write_fake_outputs(rd, stage)
            rd.mark_done(stage)
            return stage

        return run

    monkeypatch.setattr(pipeline, "_stage_runner", runner)
    return calls
