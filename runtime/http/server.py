"""fnrun's HTTP server: uvicorn inside the caller's anyio task group.

`serve` runs an ASGI app without signal handlers of its own (the
supervisor owns signals), with a header read timeout that uvicorn lacks.
Two protocol paths (`protocol_class`): the fast one
(`runtime.http.fast_protocol`, httptools, each small reply in one write) reaches
into uvicorn's internals, so it is used only on a uvicorn version it was
checked against (`CHECKED_UVICORN`; pyproject.toml pins the same range);
the plain one (`runtime.http.plain_protocol`, h11) serves everywhere else,
including where httptools is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import anyio
import anyio.abc
import uvicorn
from starlette.types import ASGIApp

from runtime.errors import UsageError
from runtime.specs import HttpSettings

HEADER_TIMEOUT = 10.0
"""Seconds a client gets to send a request's headers."""
KEEP_ALIVE = 5.0
"""Seconds an idle keep-alive connection stays open (uvicorn's default)."""
SHUTDOWN_GRACE = 5
CHECKED_UVICORN = frozenset({"0.53", "0.54", "0.55"})
"""uvicorn release series (major.minor) whose httptools protocol internals
`runtime.http.fast_protocol` was read against, and tests/runtime/test_http.py
passed on; keep in step with pyproject.toml's pin."""
ProtocolPath = Literal["auto", "fast", "plain"]

log = logging.getLogger("fnrun.http")


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


def uvicorn_series(version: str = uvicorn.__version__) -> str:
    """The release series of a uvicorn version, e.g. 0.55 of 0.55.1: internals change
    between series, not within one."""
    return ".".join(version.split(".")[:2])


def protocol_class(path: ProtocolPath = "auto") -> type[asyncio.Protocol]:
    """The protocol to serve with: `fast` or `plain`, or `auto`: fast where it can be.

    `auto` takes the plain path, with one log line saying why, when httptools
    is not installed or uvicorn is not a version the fast path was checked
    against. Asking for `fast` where it cannot be is a `UsageError`.
    """
    why = None
    if path != "plain":
        if uvicorn_series() not in CHECKED_UVICORN:
            why = (f"uvicorn {uvicorn.__version__} is not a version the fast path was checked "
                   f"against ({', '.join(sorted(CHECKED_UVICORN))})")
        else:
            try:
                from runtime.http.fast_protocol import FastProtocol
            except ImportError as exc:
                why = f"httptools is not installed ({exc})"
            else:
                return FastProtocol
        if path == "fast":
            raise UsageError(f"cannot serve on the fast HTTP path: {why}")
        log.warning("serving HTTP on the plain (h11) path: %s", why)
    from runtime.http.plain_protocol import PlainProtocol

    return PlainProtocol


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
    path: ProtocolPath = "auto",
    started: Callable[[Listening], None] | None = None,
    task_status: anyio.abc.TaskStatus[Listening] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until cancelled, then shut down gracefully.

    Use with `await task_group.start(serve, app, settings)`, which returns
    the `Listening` address once connections are accepted.

    Raises:
        UsageError: the address cannot be bound, or `path` is "fast" where it cannot be.
    """
    protocol = type("Protocol", (protocol_class(path),),
                    {"header_timeout": header_timeout, "keep_alive": keep_alive})
    sock = sock or bind_socket(settings.host, settings.port)
    config = uvicorn.Config(
        app, http=protocol, lifespan="off", access_log=False, log_config=None,
        timeout_keep_alive=round(keep_alive) or 1,  # the plain path's; the fast one's is its own
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
