"""The fast path: uvicorn's httptools protocol with a header deadline and one-write replies.

This subclass reaches into uvicorn's private internals (`cycle`, `pipeline`,
`flow`, `server_state`, and the steps of `on_response_complete`), as read
in the uvicorn versions listed in `runtime.http.server.CHECKED_UVICORN`; the
pin in pyproject.toml and `tests/runtime/test_server.py` keep it to those.
Importing this module needs httptools; `runtime.http.server` falls back to
`runtime.http.plain_protocol` without it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class FastProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its waits bounded by one lazily re-armed timer.

    uvicorn only times out idle keep-alive connections, and its keep-alive
    timer stops at the first byte, so a client trickling headers one byte at
    a time would hold a connection forever (slowloris): here a request's
    headers must be complete `header_timeout` after its first byte (or after
    the connection opened). The keep-alive wait after each response is the
    same deadline (`keep_alive`), where uvicorn arms and cancels a
    loop timer per request (measured: a visible share of a no-op webhook).
    """

    header_timeout = 10.0
    keep_alive = 5.0
    _header_timer: asyncio.TimerHandle | None = None
    _header_timer_at = 0.0
    _header_deadline: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout)

    def on_headers_complete(self) -> None:
        self._header_deadline = None
        super().on_headers_complete()
        cycle = self.cycle
        if (cycle is not None and cycle.transport is self.transport
                and self.scope["method"] != "HEAD"):
            cycle.transport = HeadWithBody(self.transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        if self.pipeline or self.transport.is_closing():
            super().on_response_complete()  # starts the next pipelined request, arms no timer
            return
        # uvicorn's own steps, minus its per-request keep-alive timer.
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        self._arm(self.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_deadline = None
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        # One lazily re-armed timer per connection, not a timer per request:
        # arming is a store to `_header_deadline`; the timer moves itself later
        # when it fires early, and is replaced only for an earlier deadline.
        deadline = self._header_deadline = self.loop.time() + seconds
        if self._header_timer is None or deadline < self._header_timer_at:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer, self._header_timer_at = (
                self.loop.call_at(deadline, self._expire), deadline)

    def _expire(self) -> None:
        self._header_timer = None
        deadline = self._header_deadline
        if deadline is None or self.transport.is_closing():
            return  # headers arrived: the next `_arm` starts a timer again
        if self.loop.time() < deadline:
            self._header_timer = self.loop.call_at(deadline, self._expire)
            self._header_timer_at = deadline
        else:
            self.transport.close()


class HeadWithBody:
    """A response's transport that holds the status line and headers back until
    the first body write, so that a small response leaves in one `send`.

    uvicorn writes them as two, which is two TCP segments for the client to
    take in and a syscall more. Every ASGI body message writes (HEAD
    responses, which write none, are left alone); `close` flushes.
    """

    __slots__ = ("_transport", "_head", "_started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif not self._started and not data.startswith(b"HTTP/1.1 100 "):
            # The first write that is not an interim 100 Continue: the headers.
            self._started, self._head = True, data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
