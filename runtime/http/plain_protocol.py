"""The plain path: uvicorn's h11 protocol, pure Python, for machines without httptools.

uvicorn's own keep-alive timer stops at a request's first byte, so a client
trickling headers one byte at a time would hold a connection forever
(slowloris). `PlainProtocol` adds the header deadline the fast path has, and
nothing else: uvicorn answers as it always does (two writes per reply, its
own keep-alive timer). It reads only `cycle` and `cycle.response_complete`
of uvicorn's internals, to tell "between requests" from "serving one".
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class PlainProtocol(H11Protocol):
    """A request's headers must be complete `header_timeout` after its first byte
    (or after the connection opened); else the connection is closed."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._between_requests():
            self._disarm()  # headers complete: the body's deadline is the app's
        elif self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _between_requests(self) -> bool:
        cycle = self.cycle
        return cycle is None or cycle.response_complete

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            self.transport.close()
