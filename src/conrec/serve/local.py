"""Start ``conrec serve`` as a real uvicorn subprocess on loopback (for tests and the benchmark).

Why a subprocess: it exercises the actual CLI entry, uvicorn and sockets, exactly as deployed,
and a crash or hang in the server cannot take the caller down. Always binds 127.0.0.1.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from conrec.config import PipelineConfig, dump_config

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LocalServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:] if self.log_path.exists() else ""


def free_port() -> int:
    """A currently free TCP port on loopback, below the kernel's ephemeral range where it can tell.

    Why not simply the port the OS hands out for ``bind(0)``: that port comes from the ephemeral range,
    from which every outgoing connection also takes its source port. Between this check and the
    server's own bind (a second or more while it imports), a client connection anywhere on the
    machine (the parallel test workers' many requests) could take it, and the server would fail
    with "address already in use". Below the range only another caller of this function can.
    """
    low = _ephemeral_low()
    if low is not None and low > 2048:
        rng = random.Random()
        for _ in range(64):
            port = rng.randrange(low // 2, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int | None:
    """The first port of the kernel's ephemeral range (Linux), or None where it cannot be read."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextmanager
def local_server(cfg: PipelineConfig, startup_timeout: float = 120.0, attempts: int = 3) -> Iterator[LocalServer]:
    """Run ``python -m conrec.cli serve`` for ``cfg`` on 127.0.0.1:<free port> until the block exits.

    Waits for ``GET /healthz`` to answer 200 from every worker process (model loading happens
    before that); raises RuntimeError with the server's log tail if it exits or does not come up
    in time. A server that exits because its port was taken in the meantime (:func:`free_port`
    cannot reserve it) is started again on another port, up to ``attempts`` times in all.
    """
    for attempt in range(1, attempts + 1):
        with _started(cfg, free_port()) as server:
            try:
                _wait_healthy(server, startup_timeout, cfg.serve.processes)
            except PortTaken:
                if attempt == attempts:
                    raise
                continue
            yield server
            return


class PortTaken(RuntimeError):
    """The server exited at start because another process had taken its port."""


@contextmanager
def _started(cfg: PipelineConfig, port: int) -> Iterator[LocalServer]:
    """``conrec serve`` for ``cfg`` on 127.0.0.1:``port`` as a subprocess, stopped when the block exits."""
    serve_cfg = cfg.serve.model_copy(update={"host": LOOPBACK, "port": port})
    cfg = cfg.model_copy(update={"serve": serve_cfg, "run_dir": Path(cfg.run_dir).resolve()})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="conrec-serve-") as tmp:
        cfg_path, log_path = Path(tmp) / "serve.yaml", Path(tmp) / "server.log"
        cfg_path.write_text(dump_config(cfg))
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "conrec.cli", "serve", "--config", str(cfg_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        server = LocalServer(url=f"http://{LOOPBACK}:{port}", process=proc, log_path=log_path)
        try:
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait_healthy(server: LocalServer, timeout: float, processes: int = 1) -> None:
    """Until ``GET /healthz`` answers 200 from ``processes`` distinct server processes.

    Why every worker: a client that opens its keep-alive connections while only the first worker
    listens keeps all of them on that worker (measured: one worker at a whole core, the other idle,
    for a whole benchmark level). Each poll is a new connection, which the kernel gives to a
    listening worker.
    """
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_tail()
            if "address already in use" in tail.lower():
                raise PortTaken(f"port of {server.url} taken before the server bound it:\n{tail}")
            raise RuntimeError(
                f"server exited with code {server.process.returncode} before becoming healthy:\n{server.log_tail()}"
            )
        try:
            r = httpx.get(f"{server.url}/healthz", timeout=2.0)
            if r.status_code == 200:
                seen.add(int(r.json().get("process", 0)))
                if len(seen) >= processes:
                    return
        except httpx.TransportError:
            pass
        time.sleep(0.05 if seen else 0.2)
    raise RuntimeError(f"server not healthy at {server.url} after {timeout:.0f} s:\n{server.log_tail()}")
