"""The server holds its limits (issue 13.5): body size before parsing, bounded queue, short
messages, strict types, API key, and a warning when bound beyond loopback."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from conrec.config import PipelineConfig, load_config
from conrec.errors import ConfigError
from conrec.serve import app as app_mod
from conrec.serve.config import ServeConfig
from conrec.serve.limits import (
    AdmissionGate,
    ClientGone,
    exposure_warning,
    is_loopback,
    resolve_api_key,
)

# --- body size ---------------------------------------------------------------------------------


def test_body_over_the_limit_is_413_before_parsing(serve_client):
    client, pred = serve_client(max_body_bytes=10_000)
    big = b'{"negative": ["' + b"x" * 5_000_000 + b'"]}'
    started = time.perf_counter()
    r = client.post("/v1/dislikes", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]
    assert len(r.content) < 500 and time.perf_counter() - started < 2.0 and pred.calls == []


def test_streamed_body_over_the_limit_is_413(serve_client):
    client, pred = serve_client(max_body_bytes=10_000)

    def chunks():
        yield b'{"negative": ["'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"]}'

    r = client.post("/v1/dislikes", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and pred.calls == []
    ok = client.post("/v1/dislikes", json={"negative": ["i0"], "k": 2})  # small bodies still pass
    assert ok.status_code == 200 and len(ok.json()["items"]) == 2


# --- bounded queue -----------------------------------------------------------------------------


def test_full_queue_answers_503_with_retry_after(serve_client):
    client, pred = serve_client(inference_workers=1, max_queue=1, retry_after_s=3)
    release = threading.Event()
    entered = threading.Semaphore(0)
    inner = pred.inner.recommend

    def slow(histories, k):
        entered.release()
        release.wait(10)
        return inner(histories, k)

    pred.inner.recommend = slow  # type: ignore[method-assign]
    results: list[int] = []

    def call():
        results.append(client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code)

    running = threading.Thread(target=call)
    running.start()
    assert entered.acquire(timeout=10)  # one request holds the model
    queued = threading.Thread(target=call)
    queued.start()
    deadline = time.monotonic() + 10
    while app_gate(client).pending < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    r = client.post("/v1/dislikes", json={"negative": ["i1"]})  # third: worker busy, queue full
    assert r.status_code == 503 and r.headers["retry-after"] == "3" and "busy" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200  # liveness is not queued
    release.set()
    running.join(10)
    queued.join(10)
    assert sorted(results) == [200, 200]


def app_gate(client: TestClient) -> AdmissionGate:
    return client.app.state.admission  # type: ignore[attr-defined]


def test_admission_gate_counts_running_and_waiting():
    gate = AdmissionGate(workers=1, max_queue=1)
    assert gate.reserve() and gate.reserve() and not gate.reserve()
    gate.release()
    assert gate.reserve() and gate.pending == 2


def test_a_request_waiting_for_the_model_leaves_when_its_client_goes():
    gate = AdmissionGate(workers=1, max_queue=2)
    gone = threading.Event()

    def wait_for_slot(client_gone) -> str:
        with gate.model_slot(client_gone):
            return "ran"

    with ThreadPoolExecutor(2) as pool:
        with gate.model_slot():  # the model is busy
            leaving = pool.submit(wait_for_slot, gone.is_set)
            staying = pool.submit(wait_for_slot, lambda: False)
            time.sleep(0.05)
            gone.set()
            gate.client_left()
            with pytest.raises(ClientGone):
                leaving.result(10)
            assert not staying.done()
        assert staying.result(10) == "ran"  # the slot still goes to the one that stayed


# --- messages and types ------------------------------------------------------------------------


def test_error_messages_are_truncated(serve_client):
    client, _ = serve_client(max_history=100, max_body_bytes=5_000_000)
    unknown = [f"{j}" + "z" * 20_000 for j in range(50)]
    r = client.post("/v1/dislikes", json={"negative": unknown})
    assert r.status_code == 422 and "unknown item id" in r.json()["detail"]
    assert len(r.content) < 3_000
    r = client.post("/v1/dislikes", json={"negative": ["i0"], "q" * 100_000: 1})
    assert r.status_code == 422 and len(r.content) < 3_000
    r = client.post("/v1/dislikes/batch", json={"requests": [{"negative": [1]}] * 3000})
    assert r.status_code in (413, 422) and len(r.content) < 6_000


@pytest.mark.parametrize(
    "body",
    [
        {"negative": ["i0"], "k": True},
        {"negative": ["i0"], "k": "5"},
        {"negative": ["i0"], "k": 5.0},
        {"history": [{"item_id": "i0", "feedback": True}]},
        {"history": [{"item_id": "i0", "feedback": "-1"}]},
        {"negative": [0]},
    ],
)
def test_strict_types(body, serve_client):
    client, pred = serve_client()
    r = client.post("/v1/dislikes", json=body)
    assert r.status_code == 422, r.text
    assert pred.calls == []


# --- API key -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["config", "env"])
def test_api_key_guards_every_endpoint_but_healthz(where, monkeypatch, serve_client):
    monkeypatch.delenv("CONREC_API_KEY", raising=False)
    if where == "env":
        monkeypatch.setenv("CONREC_API_KEY", "s3cret")
        client, _ = serve_client()
    else:
        client, _ = serve_client(api_key="s3cret")
    body = {"negative": ["i0"], "k": 2}
    assert client.get("/healthz").status_code == 200
    for path in ("/docs", "/openapi.json"):
        assert client.get(path).status_code == 401
    r = client.post("/v1/dislikes", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/dislikes", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/dislikes", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/v1/dislikes/batch", json={"requests": [body]}, headers={"X-API-Key": "s3cret"}).status_code == 200


def test_no_key_configured_means_open(monkeypatch, serve_client):
    monkeypatch.delenv("CONREC_API_KEY", raising=False)
    assert resolve_api_key(None) is None and resolve_api_key("k") == "k"
    client, _ = serve_client()
    assert client.post("/v1/dislikes", json={"negative": ["i0"]}).status_code == 200


# --- binding -----------------------------------------------------------------------------------


def test_exposure_warning_only_beyond_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("myhost")
    assert exposure_warning("127.0.0.1", has_key=False) is None
    assert "WITHOUT authentication" in (exposure_warning("0.0.0.0", has_key=False) or "")
    assert "API key" in (exposure_warning("0.0.0.0", has_key=True) or "")


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_logs_the_warning_when_binding_beyond_loopback(host, warned, monkeypatch, caplog):
    import uvicorn

    monkeypatch.delenv("CONREC_API_KEY", raising=False)
    monkeypatch.setattr(app_mod, "create_app_from_run", lambda cfg: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    with caplog.at_level(logging.WARNING, logger="conrec.serve"):
        app_mod.run(PipelineConfig(), host=host)
    assert ("WITHOUT authentication" in caplog.text) is warned


def test_a_quiet_log_level_does_not_hide_the_exposure_warning(monkeypatch, capsys):
    """``serve.log_level: error`` (which a run directory's own config.yaml may set) silenced the warning that
    the server is reachable beyond this machine without authentication."""
    import uvicorn

    monkeypatch.delenv("CONREC_API_KEY", raising=False)
    monkeypatch.setattr(app_mod, "create_app_from_run", lambda cfg: object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    quiet = logging.getLogger("conrec.serve")
    monkeypatch.setattr(quiet, "level", logging.ERROR)
    app_mod.run(PipelineConfig(serve={"log_level": "error"}), host="0.0.0.0")
    assert "WITHOUT authentication" in capsys.readouterr().err


def test_a_loopback_server_answers_only_its_loopback_names_against_dns_rebinding(serve_client):
    """Any Host was answered: a web page on a domain re-resolved to 127.0.0.1 could read every user's history
    and the model's answers from a loopback server without a key. Bound beyond loopback, or with
    ``serve.allowed_hosts``, the names are the operator's."""
    from fastapi.testclient import TestClient

    client, pred = serve_client()
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example:8000", "attacker.example", "127.0.0.1.nip.io", "[::2]:8000"):
        for path in ("/healthz", "/openapi.json"):
            r = client.get(path, headers={"host": host})
            assert r.status_code == 400 and "serve.allowed_hosts" in r.json()["detail"], (host, path, r.text)
        r = client.post("/v1/dislikes", json={"negative": ["i1"]}, headers={"host": host})
        assert r.status_code == 400
    assert not pred.calls
    wide, _ = serve_client(host="0.0.0.0")
    assert wide.get("/healthz", headers={"host": "api.example.org"}).status_code == 200
    named, _ = serve_client(allowed_hosts=["api.example.org", "Proxy.example.org:8443"])
    assert named.get("/healthz", headers={"host": "API.example.org:443"}).status_code == 200
    assert named.get("/healthz", headers={"host": "proxy.example.org"}).status_code == 200
    assert named.get("/healthz", headers={"host": "localhost"}).status_code == 200  # still bound to loopback
    assert named.get("/healthz", headers={"host": "attacker.example"}).status_code == 400
    with pytest.raises(ConfigError, match="allowed_hosts"):  # an empty list would refuse every request
        load_config(None, {"serve": {"allowed_hosts": []}})
    anyone, _ = serve_client(allowed_hosts=["*"])
    assert anyone.get("/healthz", headers={"host": "whatever.example"}).status_code == 200
    assert isinstance(client, TestClient)


def test_serve_checks_hosts_against_the_address_it_binds(monkeypatch):
    """``--host`` (not only serve.host) decides the names: the app and the worker processes get the bound address."""
    import uvicorn

    seen: list[PipelineConfig] = []
    monkeypatch.delenv("CONREC_API_KEY", raising=False)
    monkeypatch.setattr(app_mod, "create_app_from_run", lambda cfg: seen.append(cfg) or object())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    app_mod.run(PipelineConfig(), host="0.0.0.0", port=8123)
    assert (seen[0].serve.host, seen[0].serve.port) == ("0.0.0.0", 8123)


def _closed_within(sock, seconds: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``seconds``."""

    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("processes", [1, 2])
def test_a_request_that_does_not_arrive_whole_in_time_is_closed(tmp_path, processes):
    """Found by probing: uvicorn has no read timeout, so connections that sent nothing, half a header or half a
    body were held forever, and a few hundred of them used up the server's file descriptors. A request must now
    arrive whole within serve.request_read_timeout_s; a slow model answer is not cut."""
    import socket

    from conrec.serve.local import local_server
    from conrec.serve.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", n_items=30, n_users=5, events_per_user=6)
    cfg = PipelineConfig.model_validate(
        {"run_dir": str(run.root), "threads": 1, "serve": {"model": "popular", "request_read_timeout_s": 1.0, "processes": processes}}
    )
    with local_server(cfg, startup_timeout=120) as server:
        host, port = server.url.removeprefix("http://").split(":")
        idle, half_header, half_body, whole = (socket.create_connection((host, int(port))) for _ in range(4))
        half_header.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        half_body.sendall(b"POST /v1/dislikes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"negative\": ")
        whole.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        whole.settimeout(10)
        assert whole.recv(4096).startswith(b"HTTP/1.1 200")
        for sock in (idle, half_header, half_body):
            assert _closed_within(sock, 10), sock
            sock.close()
        whole.close()
        import httpx

        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # the server itself is fine


# --- abandoned requests ------------------------------------------------------------------------


class _HeldPredictor:
    """Popularity-free stand-in whose first model call waits for ``release``; records every history it computes."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.computed: list[list[str]] = []
        self.lock = threading.Lock()

    def _pass(self, histories) -> None:
        with self.lock:
            self.computed += [list(h[0]) for h in histories]
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(30)

    def recommend(self, histories, k, exclude=None):
        self._pass(histories)
        return [[(f"i{j}", -float(j)) for j in range(6, 6 + k)] for _ in histories]

    def score(self, histories, candidates):
        self._pass(histories)
        return [[float(len(c)) for c in slate] for slate in candidates]


@contextmanager
def _uvicorn(app):
    """``app`` served by a real uvicorn (conrec's h11 protocol) on a free loopback port in a thread; yields (host, port)."""
    import uvicorn

    from conrec.serve.local import LOOPBACK, free_port
    from conrec.serve.protocol import set_read_timeout

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", access_log=False, **set_read_timeout(30)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the test server did not start"
    try:
        yield LOOPBACK, port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _wait_for(what, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not what() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(what())


def test_requests_abandoned_while_queued_are_not_computed_and_free_their_place():
    """Found by a soak: a client that disconnected did not cancel its request: the server computed the whole answer,
    and the request kept its admission place until then, so clients that time out and retry pushed live requests into
    503s. A single request queued in the micro-batcher and a batch waiting for the model are now skipped when their
    client goes, and give their place up at once; the request being computed, and every connected client, are answered."""
    import json
    import socket
    import struct

    import httpx

    from builders import SERVE_TEST_LIMITS, serve_tables

    items, sid_map, events = serve_tables()
    pred = _HeldPredictor()
    cfg = ServeConfig(**{**SERVE_TEST_LIMITS, "inference_workers": 1, "max_queue": 3, "batch_window_ms": 0})
    app = app_mod.create_app(pred, items, sid_map, events, cfg, model_name="fake")
    gate = app.state.admission
    with _uvicorn(app) as (host, port), httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as client:
        answers: dict[str, httpx.Response] = {}

        def live(name: str, history: list[str]) -> threading.Thread:
            t = threading.Thread(target=lambda: answers.__setitem__(name, client.post("/v1/dislikes", json={"negative": history, "k": 2})))
            t.start()
            return t

        running = live("running", ["i0"])
        assert pred.entered.wait(10)  # it holds the one model slot
        abandoned = []
        for path, body in [
            ("/v1/dislikes", {"negative": ["i1"]}),  # micro-batched: queued behind the running one
            ("/v1/score", {"negative": ["i2"], "candidates": ["i5", "i6"]}),
            ("/v1/dislikes/batch", {"requests": [{"negative": ["i3"]}, {"negative": ["i4"], "k": 3}]}),  # waits for the slot
        ]:
            raw = json.dumps(body).encode()
            sock = socket.create_connection((host, port))
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
            abandoned.append(sock)
        assert _wait_for(lambda: gate.pending == 4), gate.pending  # all admitted: the queue is full
        abandoned[0].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # one reset, two closed
        for sock in abandoned:
            sock.close()
        assert _wait_for(lambda: gate.pending == 1), f"{gate.pending} places still held by abandoned requests"
        later = live("later", ["i9"])  # admitted, not 503, while the first is still being computed
        assert _wait_for(lambda: gate.pending == 2 or "later" in answers), answers.get("later")
        pred.release.set()
        running.join(30)
        later.join(30)
        assert answers["running"].status_code == 200 and answers["later"].status_code == 200, answers
        assert [i["item_id"] for i in answers["later"].json()["items"]] == ["i6", "i7"]
        assert pred.computed == [["i0"], ["i9"]]  # nothing of i1 .. i4: the abandoned requests were never computed
        assert gate.abandoned == 3
        for _ in range(3):  # keep-alive connections after all this: answered, none taken for gone
            assert client.post("/v1/dislikes/batch", json={"requests": [{"negative": ["i8"]}]}).status_code == 200
            assert client.post("/v1/score", json={"negative": ["i8"], "candidates": ["i1"]}).status_code == 200
        assert gate.abandoned == 3 and _wait_for(lambda: gate.pending == 0)  # released just after each answer is sent
