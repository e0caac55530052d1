"""fnrun's HTTP server: uvicorn inside the caller's anyio task group.

`serve` runs an ASGI app without signal handlers of its own (the
supervisor owns signals), with a header read timeout that uvicorn lacks and
each small response sent in one write (see `_HeaderTimeoutProtocol` and
`_HeadWithBody`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.errors import UsageError
from runtime.specs import HttpSettings

HEADER_TIMEOUT = 10.0
"""Seconds a client gets to send a request's headers."""
KEEP_ALIVE = 5.0
"""Seconds an idle keep-alive connection stays open (uvicorn's default)."""
SHUTDOWN_GRACE = 5


@dataclass(frozen=True)
class Listening:
    """Where the server listens (the real port when 0 was asked for)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one.

    Raises:
        UsageError: the address is taken or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class _HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its waits bounded by one lazily re-armed timer.

    uvicorn only times out idle keep-alive connections, and its keep-alive
    timer stops at the first byte, so a client trickling headers one byte at
    a time would hold a connection forever (slowloris): here a request's
    headers must be complete `header_timeout` after its first byte (or after
    the connection opened). The keep-alive wait after each response is the
    same deadline (`keep_alive`), where uvicorn arms and cancels a
    loop timer per request (measured: a visible share of a no-op webhook).
    """

    header_timeout = HEADER_TIMEOUT
    keep_alive = KEEP_ALIVE
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
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

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


class _HeadWithBody:
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


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the supervisor owns SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = anyio.Event()
        """Set once startup is over, whether or not it succeeded (`started`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.up.set()


async def serve(
    app: ASGIApp,
    settings: HttpSettings,
    *,
    sock: socket.socket | None = None,
    header_timeout: float = HEADER_TIMEOUT,
    keep_alive: float = KEEP_ALIVE,
    started: Callable[[Listening], None] | None = None,
    task_status: anyio.abc.TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled, then shut down gracefully.

    Use with `await task_group.start(serve, app, settings)`, which returns
    the `Listening` address once connections are accepted.

    Raises:
        UsageError: the address cannot be bound.
    """
    sock = sock or bind_socket(settings.host, settings.port)
    protocol = type("Protocol", (_HeaderTimeoutProtocol,),
                    {"header_timeout": header_timeout, "keep_alive": keep_alive})
    config = uvicorn.Config(
        app, http=protocol, lifespan="off", access_log=False, log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE, server_header=False,
        # Nothing reads the client address or scheme, so X-Forwarded-* rewriting is waste.
        proxy_headers=False,
    )
    server = _Server(config)
    finished = anyio.Event()

    async def run() -> None:
        # Shielded so that cancelling `serve` turns into uvicorn's own graceful
        # shutdown (should_exit) instead of tearing it down mid-response.
        with anyio.CancelScope(shield=True):
            try:
                await server.serve(sockets=[sock])
            finally:
                sock.close()
                server.up.set()
                finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        try:
            await server.up.wait()
            if server.started:
                listening = Listening(settings.host, sock.getsockname()[1])
                task_status.started(listening)
                if started is not None:
                    started(listening)
            await finished.wait()
        finally:
            server.should_exit = True
