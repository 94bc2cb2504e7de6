"""uvicorn's h11 HTTP protocol with a deadline for the request head (request line and headers).

uvicorn has no such timeout: its keep-alive timer runs only between requests and is cancelled by the first byte
of the next one, and a new connection has no timer at all. So a client that opens connections and sends their
headers a byte at a time ("slowloris") holds each of them open for ever. The ASGI app cannot help: it is only
called once the head is complete. Here the whole head must arrive within `header_timeout_s` of the connection
being opened or of the previous response on it; otherwise the connection is closed, with a 408 JSON answer if
part of a head had arrived. Bodies have their own deadline (`upload_timeout_s`, in BodyLimitMiddleware).

It also caps the open connections (`max_connections`, HTTP and WebSocket alike), below the file-descriptor limit, so
that idle connections cannot exhaust the descriptors (then every accept() fails and /healthz stalls): a connection
beyond the cap closes the one that has waited longest for a request head (an idle keep-alive or a silent client:
never one whose request is being served), or, when none is waiting, is itself answered 503 and closed.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request head is not complete `header_timeout_s` after it began
    waiting for one. Make a subclass with the timeout set (`with_header_timeout`) to pass as uvicorn's `http`."""

    header_timeout_s: float = 10.0
    max_connections: int | None = None
    # The server's connections now waiting for a request head, oldest first (a dict as an ordered set); one per
    # subclass made by `with_header_timeout`, i.e. per server.
    _waiting: dict[HeaderTimeoutProtocol, None] = {}
    _head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_header_timeout(cls, seconds: float, max_connections: int | None = None) -> type[HeaderTimeoutProtocol]:
        return type(cls.__name__, (cls,), {"header_timeout_s": float(seconds), "max_connections": max_connections,
                                           "_waiting": {}})

    def _arm_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
            self._waiting[self] = None

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._waiting.pop(self, None)

    def _make_room(self) -> None:
        """Over `max_connections`: close the connection waiting longest for a head, else refuse this one (503)."""
        oldest = next((p for p in self._waiting if p is not self), None)
        if oldest is not None:
            oldest._cancel_head_timer()
            oldest.transport.close()
            return
        self._cancel_head_timer()
        body = json.dumps({"error": f"the server has its {self.max_connections} connections open (max_connections) "
                                    "and all are busy; try again later"}).encode()
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head arrived: say why the connection is closed
            body = json.dumps({"error": f"the request headers did not arrive within {self.header_timeout_s:g} s "
                                        "(header_timeout_s); check the connection"}).encode()
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Waiting for (the rest of) a head: keep the deadline that is running, or start one after a body ended
        # and h11 began the next cycle. A head is complete once h11 has left IDLE: the app takes over.
        if self.conn.their_state is h11.IDLE:
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE:  # keep-alive: the next request's head is due within the timeout
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)


__all__ = ["HeaderTimeoutProtocol"]
