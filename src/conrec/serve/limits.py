"""The service's limits, enforced before any work: body size, API key, admission, message length.

Why each, in the order a request meets them:

* :class:`BodySizeLimit` (outermost ASGI middleware): a body larger than ``serve.max_body_bytes``
  is answered 413 from its ``Content-Length`` alone, or as soon as the streamed bytes pass the
  limit; it is never buffered whole or parsed (a 100 MB body used to cost seconds and a lasting GB).
* :class:`ApiKeyAuth`: with a key configured (``serve.api_key`` or ``$CONREC_API_KEY``), every path
  but :data:`OPEN_PATHS` (``/healthz``, the inspector page's data-free shell) needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (401 otherwise),
  compared in constant time. ``/healthz`` stays open for load balancers.
* :class:`Admission` + :class:`AdmissionGate`: at most ``inference_workers`` model calls run and ``max_queue`` wait; the
  next request gets 503 with ``Retry-After`` at once instead of joining an unbounded queue. An admitted request whose
  client disconnects before its model call is skipped (:class:`ClientGone`) and gives its place up at once.
* :func:`clip`: error messages quote user input only up to a bounded length.

And on the way out, :class:`NoStoreHeaders` (outermost): every response says ``Cache-Control: no-store`` and
``X-Content-Type-Options: nosniff``, but the API pages' versioned scripts and styles, which a browser keeps.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from conrec.errors import ConfigError

API_KEY_ENV = "CONREC_API_KEY"
# /healthz for load balancers; the inspector page's shell and assets (conrec.serve.ui.PUBLIC_PATHS)
# because a browser cannot attach the key to a page load: they hold no data, and every data call
# the page makes sends the key. "/ui/" (the page's address with a slash typed after it) serves nothing: the router
# answers it with a redirect to /ui, which needed the key, so a keyed server answered it 401 where an open one showed
# the page.
OPEN_PATHS = frozenset({"/healthz", "/ui", "/ui/", "/ui/assets/app.js", "/ui/assets/app.css"})
MAX_DETAIL_CHARS = 1000  # longest "detail" an error response carries
MAX_QUOTE_CHARS = 64  # longest single user-given value quoted in a message

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Gone = Callable[[], bool]  # whether an admitted request's client has disconnected (cheap: read per job)

# scope key of an admitted request's Gone (set by Admission; conrec.serve.app passes it to the model calls)
CLIENT_GONE = "conrec.client_gone"


class ClientGone(Exception):
    """The client of an admitted request disconnected before its model call, which is therefore skipped."""


def never_gone() -> bool:
    """The :data:`Gone` of a request that is not watched (no :class:`Admission` in front: tests, the inspector)."""
    return False


def client_gone(scope: Mapping[str, Any]) -> Gone:
    """The :data:`Gone` that :class:`Admission` put in ``scope``, else :func:`never_gone`."""
    gone: Gone = scope.get(CLIENT_GONE, never_gone)
    return gone


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def quote(value: object, limit: int = MAX_QUOTE_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit]}...'"


def resolve_api_key(configured: str | None) -> str | None:
    """The key to enforce: ``serve.api_key`` if set, else ``$CONREC_API_KEY``, else None (no auth).

    A key that is set but blank is a :class:`~conrec.errors.ConfigError`, not "no key": an operator
    who exported an empty variable meant to protect the service, and it used to run open silently.
    """
    if configured is not None:
        if not configured.strip():
            raise ConfigError("serve.api_key is blank: set a key, or remove the setting to serve without authentication")
        return printable_key(configured.strip(), "serve.api_key")
    env = os.environ.get(API_KEY_ENV)
    if env is None:
        return None
    if not env.strip():
        raise ConfigError(
            f"${API_KEY_ENV} is set but blank, which would turn authentication off: "
            "set a key, or unset the variable to serve without one"
        )
    return printable_key(env.strip(), f"${API_KEY_ENV}")


def printable_key(key: str, where: str) -> str:
    """``key`` when each of its characters is printable ASCII (space to ``~``); else a one-line
    :class:`~conrec.errors.ConfigError` naming the first other one (not the key, a secret).

    Why: a browser sends a header value as Latin-1 bytes (and refuses a character above U+00FF), curl and most
    clients as UTF-8, and the key is compared as UTF-8 bytes: with the key ``clé`` the inspector page never got in
    (401 "wrong API key"), while curl did. Control characters are not kept intact in headers either."""
    for n, ch in enumerate(key, 1):
        if not " " <= ch <= "~":
            raise ConfigError(
                f"{where} holds {ascii(ch)} (U+{ord(ch):04X}, character {n}), which is not printable ASCII: browsers send "
                "a key as Latin-1 and other clients as UTF-8, so it could not be matched; use letters, digits and punctuation"
            )
    return key


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the service on this machine."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def exposure_warning(host: str, has_key: bool) -> str | None:
    """The warning to log when binding ``host``; None on loopback."""
    if is_loopback(host):
        return None
    if has_key:
        return f"serving on {host}, reachable beyond this machine; requests need the API key (except /healthz)"
    return (
        f"serving on {host}, reachable beyond this machine, WITHOUT authentication: anyone who can reach it can "
        f"query the model; set serve.api_key or ${API_KEY_ENV}, or bind 127.0.0.1 behind a proxy"
    )


def trusted_hosts(bind: str, configured: list[str] | None) -> frozenset[str] | None:
    """The Host names to answer (lower case), or None for any: ``serve.allowed_hosts``, else the loopback
    names when bound to loopback (a server on this machine is addressed by them), else any."""
    loopback = frozenset({"localhost", "127.0.0.1", "::1", host_name(bind)}) if is_loopback(bind) else frozenset()
    if configured is not None:
        names = frozenset(host_name(h) for h in configured)  # as a Host header is read: "api.example.org:443" too
        # a loopback server keeps its loopback names (no rebinding page can send them; the health checks use them)
        return None if "*" in names else names | loopback
    return loopback or None


def host_name(header: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1`` (lower case)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware: 400 unless the Host header names this server (:func:`trusted_hosts`).

    Why: a browser's same-origin rule protects a loopback server only by its name. A web page on a domain
    that the attacker re-resolves to 127.0.0.1 (DNS rebinding) is same-origin with it, and could read every
    user's history and the model's answers from a server without an API key. Its requests carry the
    attacker's domain in Host; a request without Host (HTTP/1.0, not a browser) passes."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = dict(scope.get("headers") or []).get(b"host")
            name = host_name(raw.decode("latin-1")) if raw is not None else ""
            if name and name not in self.allowed:
                shown = name if name.isascii() and name.isprintable() else repr(name)
                await _send_json(send, 400, {"detail": f"Host {shown[:100]} is not one this server answers (serve.allowed_hosts)"})
                return
        await self.app(scope, receive, send)


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    raw = json.dumps(body).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    hdrs += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": raw})


# What every response carries unless it sets them itself (the inspector page's shell and assets set them and more)
NO_STORE_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
# What files that never change under their URL carry instead (NoStoreHeaders' immutable_under): kept a year by the
# browser (private: with an API key they answer requests that carry it, which no shared cache should keep)
IMMUTABLE_HEADERS = ((b"cache-control", b"private, max-age=31536000, immutable"), (b"x-content-type-options", b"nosniff"))


class NoStoreHeaders:
    """ASGI middleware: :data:`NO_STORE_HEADERS` added to every HTTP response that does not set them; a file served
    under ``immutable_under`` (a URL that names its version) gets :data:`IMMUTABLE_HEADERS` instead when found (200, 304).

    Why: the inspector page's shell and assets, which hold no data, said ``no-store`` and ``nosniff``
    (:data:`conrec.serve.ui.SECURITY_HEADERS`), while the JSON that holds the data (a user's history from
    ``/ui/api/points/{id}``, the API's answers) said neither, so a browser or proxy could keep it in its cache.
    An unhandled exception's 500 is sent from outside it (Starlette's ``ServerErrorMiddleware``); the app's handler
    for it adds them there. The API pages' scripts and styles (~2.7 MB, :data:`conrec.serve.app.DOCS_ASSETS_URL`)
    then said ``no-store`` too, and every visit to /docs or /redoc downloaded them again."""

    def __init__(self, app: ASGIApp, immutable_under: str | None = None) -> None:
        self.app = app
        self.immutable_under = immutable_under.rstrip("/") + "/" if immutable_under else None

    def _immutable(self, scope: Scope) -> bool:
        """Whether the request is for a file under ``immutable_under``; asked before routing, which rewrites the
        scope's ``root_path`` in place (a mount's prefix joins it)."""
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        path = path[len(root):] if root and path.startswith(root) else path  # the app's own path, behind a proxy's prefix too
        return self.immutable_under is not None and path.startswith(self.immutable_under)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        immutable = self._immutable(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {bytes(name).lower() for name, _ in headers}
                added = IMMUTABLE_HEADERS if immutable and message["status"] in (200, 304) else NO_STORE_HEADERS
                message = {**message, "headers": headers + [(k, v) for k, v in added if k not in present]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``, without reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    def _too_large(self, size: str) -> dict[str, Any]:
        return {"detail": f"request body is {size}; the limit is max_body_bytes = {self.max_bytes:,} bytes"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                await _send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if n > self.max_bytes:
                await _send_json(send, 413, self._too_large(f"{n:,} bytes"), {"Connection": "close"})
                return
        # Chunked (or lying) bodies: read up to the limit, then replay them to the app.
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await _send_json(send, 413, self._too_large(f"over {self.max_bytes:,} bytes"), {"Connection": "close"})
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], then: Message | None, server_receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body as one message, then ``then`` or, without one, the server's
    ``receive`` again (after a whole body, it answers only ``http.disconnect``, when the client goes).

    Why not a made-up disconnect: :class:`Admission` listens for the real one, and a fake one would have every
    connected client's request skipped as abandoned."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if then is not None and not chunks:
                return then
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return then if then is not None else await server_receive()

    return receive


class ApiKeyAuth:
    """ASGI middleware: every path except :data:`OPEN_PATHS` needs the API key (401 otherwise)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    def _given(self, scope: Scope) -> bytes | None:
        for name, value in scope.get("headers") or []:
            if name == b"x-api-key":
                return value.strip()
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return value[7:].strip()
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = self._given(scope)
        if given is None or not hmac.compare_digest(given, self.key):
            why = "missing API key" if given is None else "wrong API key"
            await _send_json(
                send,
                401,
                {"detail": f"{why}: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"},
                {"WWW-Authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)


class AdmissionGate:
    """At most ``workers`` model calls at once and ``max_queue`` more requests waiting; the rest are
    refused at once.

    Why refuse instead of waiting: an unbounded queue only turns overload into ever longer
    latencies (32 clients: p95 3 s); a fast 503 + Retry-After lets clients back off or go elsewhere.
    A request takes its place in :class:`Admission` (on the event loop, before its body is parsed
    or a worker thread is used) and holds it until its response is sent; :meth:`model_slot` is the
    part where it waits for one of the ``workers``, and leaves when its client goes (:meth:`client_left`).
    """

    def __init__(self, workers: int, max_queue: int) -> None:
        self.capacity = workers + max_queue
        self.workers = workers
        self._busy = 0  # model slots taken
        self._slots = threading.Condition()
        self._lock = threading.Lock()
        self.pending = 0
        self.abandoned = 0  # requests whose model call was skipped because their client had gone (observable: tests, logs)
        self.on_client_left: list[Callable[[], None]] = []  # more waits to wake when a client goes (the micro-batcher's)

    def reserve(self) -> bool:
        with self._lock:
            if self.pending >= self.capacity:
                return False
            self.pending += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.pending -= 1

    def count_abandoned(self) -> int:
        """One more request skipped because its client had gone; the count so far."""
        with self._lock:
            self.abandoned += 1
            return self.abandoned

    @contextmanager
    def model_slot(self, gone: Gone = never_gone) -> Iterator[None]:
        """Hold one of the ``workers`` slots; :class:`ClientGone` instead when ``gone()`` is (or turns) true
        before the slot is taken, so that an abandoned request is neither computed nor kept waiting."""
        with self._slots:
            while self._busy >= self.workers and not gone():
                self._slots.wait()
            if gone():
                if self._busy < self.workers:
                    self._slots.notify()  # this waiter may have been the one woken for the free slot: pass it on
                raise ClientGone
            self._busy += 1
        try:
            yield
        finally:
            with self._slots:
                self._busy -= 1
                self._slots.notify()

    def client_left(self) -> None:
        """Wake every wait for a slot (and :attr:`on_client_left`), so that the request whose client went leaves it."""
        with self._slots:
            self._slots.notify_all()
        for wake in self.on_client_left:
            wake()


class Admission:
    """ASGI middleware: model endpoints (``POST /v1/...``) pass :class:`AdmissionGate` or get 503.

    An admitted request is watched: once its body is read, a task listens for the client's disconnect, and the
    request's :data:`Gone` (``scope[CLIENT_GONE]``) turns true when it comes before the response is sent. Why: the
    endpoints run in worker threads, which a disconnect does not stop, so an abandoned request used to be computed
    whole and keep its place until then (clients that time out and retry then pushed live ones into 503s).
    """

    def __init__(self, app: ASGIApp, gate: AdmissionGate, retry_after_s: int) -> None:
        self.app = app
        self.gate = gate
        self.retry_after_s = int(retry_after_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if not self.gate.reserve():
            await _send_json(
                send,
                503,
                {"detail": f"server busy: {self.gate.pending} requests running or queued (the limit); "
                           f"retry after {self.retry_after_s} s"},
                {"Retry-After": str(self.retry_after_s)},
            )
            return
        watch = _DisconnectWatch(receive, send, self.gate.client_left)
        scope[CLIENT_GONE] = watch.gone.is_set
        try:
            await self.app(scope, watch.receive, watch.send)
        finally:
            watch.stop()
            self.gate.release()


class _DisconnectWatch:
    """One request's ``receive`` and ``send``, with a listener for its client's disconnect once its body is read.

    Why a listener task: nobody reads ``receive`` after the body, and uvicorn stops reading the socket unless asked
    for a message, so a disconnect went unnoticed until the response was sent. ``gone`` is a thread-safe flag, cheap
    to read per job. After the body, the server's ``receive`` only answers ``http.disconnect`` (the client went, or
    the response is complete), so the listener owns it, and the app's own later calls get its answer."""

    def __init__(self, receive: Receive, send: Send, on_gone: Callable[[], None]) -> None:
        self._receive, self._send, self._on_gone = receive, send, on_gone
        self.gone = threading.Event()
        self._heard = asyncio.Event()  # the listener's message came
        self._listener: asyncio.Task[None] | None = None
        self._answered = False

    def _left(self) -> None:
        if not self._answered and not self.gone.is_set():
            self.gone.set()
            self._on_gone()

    async def _listen(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._left()
        self._heard.set()

    async def receive(self) -> Message:
        if self._listener is not None:
            await self._heard.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._left()
        elif not message.get("more_body", False):
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._answered = True  # the server's receive now says http.disconnect: not the client leaving
        await self._send(message)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
