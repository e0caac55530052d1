"""The supervisor's HTTP server: fnrun's `/_/` API in front of the webhook routes.

`create_app` builds the Starlette app; `serve` runs it on uvicorn inside the
caller's anyio task group, without signal handlers of its own (the
supervisor owns signals) and with a header read timeout that uvicorn lacks.
Bound anywhere but loopback, `/_/` routes other than health need
`Authorization: Bearer $FNRUN_TOKEN` (SPEC section 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import anyio.abc
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime import cloudevents
from runtime.errors import UsageError
from runtime.ingress import Ingress
from runtime.metrics import Metrics
from runtime.specs import HttpSettings, Settings
from runtime.views import dead_letter_json, invocation_json

BODY_TIMEOUT = 30.0
MAX_LIMIT = 1000
Endpoint = Callable[[Request], Awaitable[Response]]


class RuntimeView(Protocol):
    """What the HTTP API reads from the running supervisor."""

    settings: Settings
    metrics: Metrics

    @property
    def ingress(self) -> Ingress: ...

    @property
    def ready(self) -> bool:
        """Functions loaded and triggers bound, and not stopping."""
        ...

    @property
    def draining(self) -> bool: ...

    async def functions_json(self) -> list[dict[str, Any]]: ...

    def health_detail(self) -> dict[str, Any]: ...


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to serve beyond loopback without a token.

    Raises:
        UsageError: host is not loopback and FNRUN_TOKEN is unset or empty.
    """
    env = os.environ if environ is None else environ
    host = settings.http.host
    if not is_loopback(host) and not env.get("FNRUN_TOKEN"):
        raise UsageError(
            f"refusing to bind {host}: set FNRUN_TOKEN to serve beyond 127.0.0.1 "
            "(clients then send Authorization: Bearer $FNRUN_TOKEN to /_/ routes)"
        )


def create_app(
    view: RuntimeView, webhooks: ASGIApp | None, environ: Mapping[str, str] | None = None
) -> ASGIApp:
    """fnrun's `/_/` API; every other path goes to `webhooks` (or a 404)."""
    env = os.environ if environ is None else environ
    token = None if is_loopback(view.settings.http.host) else env.get("FNRUN_TOKEN", "")
    api = _Api(view)

    def guarded(endpoint: Endpoint) -> Endpoint:
        return endpoint if token is None else _bearer(token, endpoint)

    app = Starlette(routes=[
        Route("/_/health", api.health),
        Route("/_/events", guarded(api.events), methods=["POST"]),
        Route("/_/functions", guarded(api.functions)),
        Route("/_/metrics", guarded(api.metrics)),
        Route("/_/invocations", guarded(api.invocations)),
        Route("/_/dead-letters", guarded(api.dead_letters)),
    ])
    app.router.default = _not_found
    return _Front(app, webhooks or _not_found)


class _Front:
    """`/_/` to the Starlette API, every other path straight to the webhook table.

    Webhook paths are served exactly as declared, with no path rewriting.
    They skip Starlette's middleware and route matching, which cost more per
    request than the webhook itself (measured under wrk); the webhook app
    answers its own errors, and uvicorn answers 500 if it raises.
    """

    def __init__(self, api: ASGIApp, webhooks: ASGIApp) -> None:
        self.api, self.webhooks = api, webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not (path.startswith("/_/") or path == "/_"):
            await self.webhooks(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _bearer(token: str, endpoint: Endpoint) -> Endpoint:
    expected = f"Bearer {token}".encode()

    async def checked(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"error": "missing or wrong bearer token"}, 401,
                                {"www-authenticate": "Bearer"})
        return await endpoint(request)

    return checked


@dataclass
class _Api:
    view: RuntimeView

    async def health(self, request: Request) -> Response:
        view = self.view
        detail = view.health_detail()
        if view.ready:
            return JSONResponse({**detail, "status": "ok"})
        state = "stopping" if view.draining else "starting"
        return JSONResponse({**detail, "status": state}, 503)

    async def events(self, request: Request) -> Response:
        if not self.view.ingress.accepting:
            return JSONResponse({"error": "not accepting events (starting or stopping)"}, 503)
        try:
            body = await _bounded_body(request, self.view.settings.http.max_body)
            events = cloudevents.parse(request.headers, body)
        except _Refused as exc:
            return JSONResponse({"error": exc.message}, exc.status, {"connection": "close"})
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        await self.view.ingress.publish(events)
        return JSONResponse({"ids": [event.id for event in events]}, 202)

    async def functions(self, request: Request) -> Response:
        return JSONResponse(await self.view.functions_json())

    async def metrics(self, request: Request) -> Response:
        body = await self.view.metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def invocations(self, request: Request) -> Response:
        try:
            function, limit = _filters(request, default_limit=50)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        records = await self.view.ingress.store.history(function, limit)
        return JSONResponse([invocation_json(r) for r in records])

    async def dead_letters(self, request: Request) -> Response:
        try:
            function, limit = _filters(request, default_limit=100)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        letters = await self.view.ingress.store.dead_letters(function, limit=limit)
        return JSONResponse([dead_letter_json(d) for d in letters])


def _filters(request: Request, default_limit: int) -> tuple[str | None, int]:
    """`?function=&limit=` of the listing routes, limit bounded to 1..MAX_LIMIT."""
    raw = request.query_params.get("limit", str(default_limit))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise UsageError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    return request.query_params.get("function") or None, int(raw)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes (counted while reading: chunked too) or too slow.

    Raises:
        _Refused: 413 or 408.
    """
    declared = request.headers.get("content-length", "")
    too_large = _Refused(413, f"body over the {limit} byte limit")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    with anyio.move_on_after(BODY_TIMEOUT):
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)
    raise _Refused(408, f"body not received within {BODY_TIMEOUT:g}s")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": "not found"}, 404)(scope, receive, send)



# -- serving -----------------------------------------------------------------

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
