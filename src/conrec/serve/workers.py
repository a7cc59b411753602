"""``serve.processes``: several uvicorn worker processes, each with its own copy of the model.

Why: one server process micro-batches concurrent requests, but its Python work (HTTP parsing,
JSON, validation, and the decoder's many small module calls) runs under one interpreter lock, so
under load it used about one of the machine's cores (docs/serving-performance.md). Worker processes
share no lock. uvicorn starts, supervises and stops them and shares the listening socket among
them; conrec adds no process manager of its own.

Each worker loads the run itself (:func:`app_from_env`), so memory grows with the model's size
per process, and each has its own admission queue and micro-batcher: ``inference_workers`` and
``max_queue`` are per process. The parent process loads and checks the run once before any worker
starts (:func:`conrec.serve.app.run`), so a stale, missing or non-finite model gives the usual
one-line error instead of a loop of failing workers.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from conrec.config import PipelineConfig, dump_config, load_config
from conrec.runtime import available_cores, prepare_process

CONFIG_ENV = "CONREC_SERVE_CONFIG"  # the resolved pipeline config (a YAML file) each worker loads
APP_FACTORY = "conrec.serve.workers:app_from_env"


def worker_threads(cfg: PipelineConfig) -> int:
    """torch threads per worker: ``threads`` if set, else the available cores shared among the workers."""
    return cfg.threads or max(1, available_cores() // cfg.serve.processes)


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process: the config named by :data:`CONFIG_ENV`."""
    from conrec.serve.app import create_app_from_run

    cfg = load_config(os.environ[CONFIG_ENV])
    prepare_process(worker_threads(cfg))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=cfg.serve.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app_from_run(cfg)


class _TcpConfig(uvicorn.Config):
    """uvicorn's config with a listening socket that says it is TCP, so connections get TCP_NODELAY.

    Why: with several workers uvicorn binds the socket itself with ``proto`` 0 (uvicorn issue
    3149); asyncio enables TCP_NODELAY only on accepted sockets that report ``IPPROTO_TCP``, so
    Nagle's algorithm stayed on and every keep-alive response waited ~40 ms for the client's
    delayed ACK (measured here: 60 ms instead of 20 ms per request).
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            sock = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        # listening from here: uvicorn prints "Uvicorn running" now, but the workers only listen once they have
        # loaded the model (13-28 s), and a client that took the line at its word was refused until then; now
        # its connection waits in the backlog and is answered as soon as a worker is up
        sock.listen(self.backlog)
        return sock


def serve_processes(cfg: PipelineConfig, options: dict[str, Any]) -> None:
    """Run ``cfg.serve.processes`` workers of :func:`app_from_env` under uvicorn's supervisor (as
    ``uvicorn.run(..., workers=n)`` does, with :class:`_TcpConfig`'s socket) until stopped."""
    with tempfile.TemporaryDirectory(prefix="conrec-serve-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_config(cfg))
        os.environ[CONFIG_ENV] = str(path)  # the workers inherit it
        config = _TcpConfig(APP_FACTORY, factory=True, workers=cfg.serve.processes, **options)
        try:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        except KeyboardInterrupt:  # pragma: no cover  (Ctrl-C: the supervisor has stopped the workers)
            pass
