"""``serve.processes``: several uvicorn worker processes, each with its own copy of the model.

Why: one server process micro-batches concurrent requests, but its Python work (HTTP parsing,
JSON, validation, and the decoder's many small module calls) runs under one interpreter lock, so
under load it used about one of the machine's cores (docs/serving-performance.md). Worker processes
share no lock. uvicorn starts, supervises and stops them and shares the listening socket among
them; conrec adds no process manager of its own.

Each worker loads the run itself (:func:`app_from_env`), so memory grows with the model's size
per process, and each has its own admission queue and micro-batcher: ``inference_workers`` and
``max_queue`` are per process. The parent process checks the run once before any worker starts
(:func:`conrec.serve.app.check_servable`), loading nothing, so a missing run or no current model gives
the usual one-line error once; what only a load finds (non-finite weights, an unreadable table) the
first worker finds, and it stops the server with that line (:func:`app_from_env`) instead of a loop of
failing workers; so does any other exception a load raises (a polars or torch error, CUDA out of memory), its
traceback logged and its first line the parent's last. The parent holds no copy of the model: N workers are N copies, not N+1.

Every worker serves the model the parent checked (:data:`SERVED_ENV`), from the data, SID and eval stages
the parent read (:data:`LOADED_ENV`). One that uvicorn restarts after
a crash, when that model (or one of those stages) has since been retrained or removed, logs why and exits with uvicorn's
startup-failure status, which stops the whole server: it had restarted it in an endless loop of
tracebacks, or (after ``conrec sft`` on the run) served the new model beside the old one, two answers
from one service. ``/healthz`` says ``loaded_current: false`` once one of those stages has rerun (``model_current``
covers the model), and the parent's last line names what the worker found changed. uvicorn pings each worker from
0.5 s after its start and kills one that leaves a ping unanswered for ``serve.worker_ping_timeout_s`` as hung (and
restarts it); a worker answers only once its imports are done, which took over uvicorn's 5 s on a loaded machine. SIGHUP is ignored for the same reason (uvicorn would replace the workers one by
one, each with whatever model the run holds then): the parent logs it, the workers ignore it (a closed terminal sends
it to them too) from their first import of :mod:`conrec.serve`, before the seconds of imports and loading. Workers stop with the parent even when it is
killed (Linux).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from conrec.config import PipelineConfig, dump_config, load_config
from conrec.errors import ConrecError, StageInputError
from conrec.runtime import available_cores, prepare_process
from conrec.serve import PARENT_ENV  # the supervisor's pid: a worker whose parent is another has lost it
from conrec.serve.protocol import set_read_timeout

CONFIG_ENV = "CONREC_SERVE_CONFIG"  # the resolved pipeline config (a YAML file) each worker loads
SERVED_ENV = "CONREC_SERVE_MODEL"  # "<model>@<identity>" the parent checked: what every worker must load
LOADED_ENV = "CONREC_SERVE_LOADED"  # JSON {stage: identity} of the data, SID and eval stages the parent read
STOP_ENV = "CONREC_SERVE_STOP"  # a file where a worker that stops the server writes why, for the parent's last line
APP_FACTORY = "conrec.serve.workers:app_from_env"
log = logging.getLogger(__name__)


def worker_threads(cfg: PipelineConfig) -> int:
    """torch threads per worker: ``threads`` if set, else the available cores shared among the workers."""
    return cfg.threads or max(1, available_cores() // cfg.serve.processes)


def app_from_env() -> FastAPI:
    """uvicorn's app factory in each worker process: the config named by :data:`CONFIG_ENV`."""
    ignore_hangup()  # first (conrec.serve's import did already, in a worker): one ended by SIGHUP is restarted, loading again
    stop_with_parent()
    with stoppable_while_loading():
        return _load_app()


@contextmanager
def stoppable_while_loading() -> Iterator[None]:
    """Within the block (a worker's load), SIGTERM takes its default action (the worker ends at once) and SIGINT is
    ignored. Outside the main thread, where no handler can be set, nothing changes.

    Why: uvicorn calls the app factory inside ``Server.serve``'s signal capture, so its handlers only noted a stop,
    acted on after the load and the startup: with ``serve.processes: 2``, Ctrl-C or SIGTERM while the workers loaded
    (the supervisor passes SIGTERM on at once) waited until every worker had loaded the model, then shut each down: 33 s
    on the tiny model on a loaded machine, past ``docker stop``'s 10 s grace with a real one. A loading worker has
    taken no request and writes nothing, so nothing is lost; uvicorn's handlers are back for its graceful shutdown once
    the model is loaded. Why SIGINT ignored: Ctrl-C reaches the whole process group, and a worker it killed at once
    could die while the supervisor was in a health check, before it took its own SIGINT; the supervisor then started a
    new worker in its place. The supervisor's SIGTERM, sent as it stops, ends the workers instead."""
    import signal

    from conrec.runtime import signal_handlers

    with signal_handlers({signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_IGN}):
        yield


def _load_app() -> FastAPI:
    """:func:`app_from_env`'s load: the run's model and tables, checked against what the parent served and read."""
    from conrec.serve.app import create_app_from_run

    cfg = load_config(os.environ[CONFIG_ENV])
    expected = os.environ.get(SERVED_ENV)
    # that model, not a fresh choice (a GRPO finished since would replace the SFT the parent serves)
    pinned = None if expected is None else expected.split("@")[0]
    prepare_process(worker_threads(cfg))
    set_read_timeout(cfg.serve.request_read_timeout_s)  # the protocol class came from the parent; its deadline is this config's
    if not logging.getLogger().handlers:
        logging.basicConfig(level=cfg.serve.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app_from_run(cfg, pinned=pinned)
        if expected is not None and app.state.served != expected:
            raise StageInputError(
                f"the run's {pinned} model is no longer the one this server started with (retrained or "
                "changed since): restart conrec serve to serve it"
            )
        changed = changed_stages(json.loads(os.environ.get(LOADED_ENV, "null")), app.state.loaded)
        if changed:
            raise StageInputError(
                f"the run's {', '.join(changed)} stage is no longer the one this server started with (rerun since), so this "
                "worker would answer from other data than its siblings: restart conrec serve"
            )
    except ConrecError as exc:  # uvicorn restarts a worker that exits otherwise, forever
        log.error("worker process %d cannot serve, stopping the server: %s", os.getpid(), exc)
        say_why_stopped(str(exc))
        raise SystemExit(STARTUP_FAILURE) from None
    except Exception as exc:  # a load failure outside conrec (polars, torch, CUDA OOM): the same, or uvicorn reloads it forever
        log.exception("worker process %d cannot serve, stopping the server", os.getpid())
        say_why_stopped(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}")
        raise SystemExit(STARTUP_FAILURE) from None
    return app


def say_why_stopped(reason: str) -> None:
    """Append ``reason`` to the parent's :data:`STOP_ENV` file (nothing without one), for its last line."""
    path = os.environ.get(STOP_ENV)
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(reason.replace("\n", " ") + "\n")
    except OSError:  # the parent's message then points at the log
        pass


def changed_stages(expected: dict[str, str | None] | None, loaded: dict[str, str | None]) -> list[str]:
    """The stages whose identity a worker read differs from the one the parent read (none when not told).

    Why: the worker's users, explanations and inspector lists come from these stages too; a worker
    restarted after `conrec eval` reran served other evaluation points than its siblings, so the same
    URL answered 200 and 404 in turn."""
    return [stage for stage, identity in (expected or {}).items() if loaded.get(stage) != identity]


def stop_with_parent() -> None:
    """Ask Linux to end this worker when its parent dies, SIGKILL included (the workers went on
    serving, unsupervised, holding the port); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover  (no prctl: nothing to ask)
        return
    parent = os.environ.get(PARENT_ENV)
    if parent is not None and os.getppid() != int(parent):  # the parent died before the request: nobody would send it
        raise SystemExit(0)  # (not "the parent is pid 1": in a container the supervisor itself often is)


def ignore_hangup() -> None:
    """Ignore SIGHUP in this worker (the parent logs it once: :class:`_Supervisor`); elsewhere than POSIX a no-op.

    Why: a closed terminal sends SIGHUP to the whole process group; the parent ignored it, but its default action
    ended every worker, and uvicorn restarted them, each loading the run again."""
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def release_worker_pipes(processes: list[Any]) -> None:
    """Close the supervisor's copy of each started worker's end of its ping pipe (the worker holds its own).

    Why: uvicorn creates the pipe in the parent and keeps both ends, so a worker that exited while the supervisor
    waited for its ping's answer (a failed start, while the interpreter shuts down: about 3 s with polars and torch
    loaded) left the pipe open, and the supervisor saw the exit only after ``serve.worker_ping_timeout_s`` (30 s):
    the line of a worker that stopped the server came 30 s late. With the parent's copy closed, the worker's exit
    ends the wait at once (end of file), as uvicorn then checks the exit status."""
    for process in processes:
        process.child_conn.close()  # idempotent; uvicorn closes it again on terminate and kill


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, except that SIGHUP does not replace the workers (see the module docstring) and a worker
    that exits is seen at once (:func:`release_worker_pipes`)."""

    def keep_subprocess_alive(self) -> None:
        release_worker_pipes(self.processes)  # every one is started (uvicorn starts each before adding it)
        super().keep_subprocess_alive()

    def handle_hup(self) -> None:
        from conrec.serve.app import SIGHUP_IGNORED

        log.warning(SIGHUP_IGNORED)


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


def set_environ(values: dict[str, str | None]) -> None:
    """Set each variable to its value, removing those whose value is None."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def serve_processes(
    cfg: PipelineConfig, options: dict[str, Any], served: str | None = None, loaded: dict[str, str | None] | None = None
) -> None:
    """Run ``cfg.serve.processes`` workers of :func:`app_from_env` under uvicorn's supervisor (as
    ``uvicorn.run(..., workers=n)`` does, with :class:`_TcpConfig`'s socket) until stopped.

    ``served``: the ``<model>@<identity>`` the parent checked (``app.state.served``), which every worker
    must load; ``loaded``: the identities of the other stages it read (``app.state.loaded``), which every worker
    must read too. A worker that cannot stops the server: then a :class:`StageInputError` (exit status 2)."""
    names = (CONFIG_ENV, PARENT_ENV, SERVED_ENV, LOADED_ENV, STOP_ENV)
    before = {name: os.environ.get(name) for name in names}
    with tempfile.TemporaryDirectory(prefix="conrec-serve-") as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(dump_config(cfg))
        stop_file = Path(tmp) / "stopped"
        told = {CONFIG_ENV: str(path), PARENT_ENV: str(os.getpid()), SERVED_ENV: served,
                LOADED_ENV: None if loaded is None else json.dumps(loaded), STOP_ENV: str(stop_file)}
        try:  # the workers inherit these; none is left to a later server in this process (it read another's identities)
            set_environ(told)
            # a worker answers the supervisor's ping only after its imports: wait longer than uvicorn's 5 s for it (the
            # cost, a slower stop while a worker does not answer, is in the setting's description)
            config = _TcpConfig(APP_FACTORY, factory=True, workers=cfg.serve.processes,
                                timeout_worker_healthcheck=cfg.serve.worker_ping_timeout_s, **options)
            supervisor = _Supervisor(config, sockets=[config.bind_socket()])
            try:
                supervisor.run()
            except KeyboardInterrupt:  # pragma: no cover  (Ctrl-C: the supervisor has stopped the workers)
                pass
        finally:
            set_environ(before)
        reasons = stop_file.read_text(encoding="utf-8").splitlines() if stop_file.is_file() else []
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        why = reasons[0] if reasons else "it could not serve the run's model or the data the server loaded (its reason is logged above)"
        raise StageInputError(f"a worker process stopped the server: {why}")
