"""uvicorn's HTTP/1.1 (h11) protocol with a deadline for each request to arrive whole.

Why: uvicorn has no read timeout. A client that opens connections and never finishes a request (headers a
byte at a time, a body that never ends, or nothing at all: slowloris) held them forever, and a few hundred
such connections used up the server's file descriptors, after which it answered nobody. Each request must
now arrive whole within ``serve.request_read_timeout_s`` of the connection being made or of the previous
response; the time the model then takes to answer is not limited.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    """:class:`H11Protocol` that closes a connection whose request is not whole by its deadline."""

    read_timeout_s: float = 30.0  # set from serve.request_read_timeout_s in each serving process (set_read_timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._arm_read_deadline()

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_too_slow)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
            self._disarm_read_deadline()  # the request is whole (or the connection is ending): the app answers it

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_read_deadline()  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def _read_too_slow(self) -> None:
        self._read_deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()


def set_read_timeout(seconds: float) -> dict[str, Any]:
    """Set the deadline of this process's connections; the uvicorn options that select the protocol."""
    DeadlineH11Protocol.read_timeout_s = float(seconds)
    return {"http": DeadlineH11Protocol}
