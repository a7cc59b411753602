"""The test and benchmark servers' port: chosen where client connections cannot take it, and retried if taken."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from conrec.config import PipelineConfig
from conrec.serve import local
from conrec.serve.synthetic import write_synthetic_run


def test_free_port_is_below_the_ephemeral_range_that_client_connections_use():
    """A port from bind(0) is one every outgoing connection may take as its source port before the server binds it."""
    low = local._ephemeral_low()
    for _ in range(20):
        port = local.free_port()
        with socket.socket() as sock:
            sock.bind((local.LOOPBACK, port))  # free when returned
        if low is not None and low > 2048:
            assert low // 2 <= port < low


def test_local_server_starts_again_on_another_port_when_its_port_was_taken(tmp_path: Path, monkeypatch):
    run = write_synthetic_run(tmp_path / "run", n_items=30, n_users=5, events_per_user=8)
    cfg = PipelineConfig.model_validate({"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular"}})
    with socket.socket() as busy:
        busy.bind((local.LOOPBACK, 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = iter([taken, local.free_port()])
        monkeypatch.setattr(local, "free_port", lambda: next(ports))
        with local.local_server(cfg, startup_timeout=120) as server:
            assert not server.url.endswith(f":{taken}")
            assert httpx.get(f"{server.url}/healthz", timeout=10).json()["model"] == "popular"
