"""The supervisor's HTTP app: fnrun's `/_/` API in front of the webhook routes.

`create_app` builds it; `runtime.http.server.serve` runs it. Every `/_/` request
passes `runtime.http.door.Door` first: the Host check, no token in the URL, and
`Authorization: Bearer $FNRUN_TOKEN` once that is set (SPEC section 8).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime import cloudevents
from runtime.dashboard.gate import Gate
from runtime.dashboard.routes import Dashboard
from runtime.errors import StoreError, UsageError
from runtime.http.door import Door
from runtime.http.records import MAX_LIMIT, dead_letter_json, invocation_json, run_json
from runtime.ingress import Ingress
from runtime.metrics import Metrics
from runtime.specs import Settings
from runtime.store.base import StoreOutage
from runtime.tracing import tree

BODY_TIMEOUT = 30.0
STORE_RETRY_AFTER = 5
"""Seconds a client is asked to wait (`Retry-After`) while the store is unavailable."""

log = logging.getLogger("fnrun.http")


class RuntimeView(Protocol):
    """What the HTTP API reads from the running supervisor (`runtime.http.view.LiveView`)."""

    metrics: Metrics

    @property
    def settings(self) -> Settings: ...

    @property
    def ingress(self) -> Ingress: ...

    @property
    def draining(self) -> bool:
        """Stopping: not accepting any more (while not accepting, else starting)."""
        ...

    async def functions_json(self) -> list[dict[str, Any]]: ...

    async def brokers_json(self) -> dict[str, Any]: ...

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


def dashboard(view: RuntimeView, token: str | None) -> Dashboard:
    """The `/_/ui` dashboard of `view` (SPEC 11), behind the same door as the rest of `/_/`."""
    return Dashboard(view, Gate(token))


def create_app(
    view: RuntimeView, webhooks: ASGIApp | None, environ: Mapping[str, str] | None = None
) -> ASGIApp:
    """fnrun's `/_/` API; every other path goes to `webhooks` (or a 404)."""
    env = os.environ if environ is None else environ
    http = view.settings.http
    api = _Api(view)
    ui = dashboard(view, env.get("FNRUN_TOKEN") or None)
    app = Starlette(routes=[
        Route("/_/health", api.health),
        Route("/_/events", api.events, methods=["POST"]),
        Route("/_/functions", api.functions),
        Route("/_/brokers", api.brokers),
        Route("/_/metrics", api.metrics),
        Route("/_/invocations", api.invocations),
        Route("/_/dead-letters", api.dead_letters),
        *ui.routes,
        Route("/_/runs/{invocation:path}", api.run),
        Route("/_/traces/{event:path}", api.trace),
    ], exception_handlers={HTTPException: _http_error, StoreError: api.store_error})
    app.router.default = _not_found
    door = Door(app, http.host, http.allowed_hosts, env.get("FNRUN_TOKEN") or None, ui.gate.admits)
    return _Front(door, webhooks or _not_found, view.ingress.store.outage)


class _Front:
    """`/_/` to the Starlette API, every other path straight to the webhook table.

    Webhook paths are served exactly as declared, with no path rewriting.
    They skip Starlette's middleware and route matching, which cost more per
    request than the webhook itself (measured under wrk). The webhook app
    answers its own errors; a store error it raises becomes the API's 503
    (and `/_/health`'s store_error), anything else uvicorn's 500.
    """

    def __init__(self, api: Door, webhooks: ASGIApp, outage: StoreOutage) -> None:
        self.api, self.webhooks, self.outage = api, webhooks, outage

    @property
    def api_routes(self) -> list[tuple[str, frozenset[str]]]:
        """(path, methods) of every `/_/` route, for tests that must cover them all."""
        assert isinstance(self.api.app, Starlette)
        return [(r.path, frozenset(r.methods or ())) for r in self.api.app.routes
                if isinstance(r, Route)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not (path.startswith("/_/") or path == "/_"):
            try:
                await self.webhooks(scope, receive, send)
            except StoreError as exc:  # the API's own go to `_Api.store_error`
                await _store_unavailable(scope, exc, self.outage)(scope, receive, send)
        else:
            await self.api(scope, receive, send)


@dataclass
class _Api:
    view: RuntimeView

    async def health(self, request: Request) -> Response:
        view = self.view
        detail = view.health_detail()
        if view.ingress.accepting:  # ready: /_/health is 200 exactly while events are taken
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
        except cloudevents.MediaTypeError as exc:
            return JSONResponse({"error": str(exc)}, 415)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        await self.view.ingress.publish(events)
        # How many functions each event reached: 0 flags a type nobody subscribes to (a typo).
        matched = [len(self.view.ingress.targets(event.type)) for event in events]
        return JSONResponse({"ids": [event.id for event in events], "matched": matched}, 202)

    async def functions(self, request: Request) -> Response:
        return JSONResponse(await self.view.functions_json())

    async def brokers(self, request: Request) -> Response:
        return JSONResponse(await self.view.brokers_json())

    async def metrics(self, request: Request) -> Response:
        body = await self.view.metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def invocations(self, request: Request) -> Response:
        try:
            function, limit = _filters(request, default_limit=50)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        records = await self.view.ingress.store.runs(function=function, limit=limit)
        return JSONResponse([invocation_json(r) for r in records])

    async def run(self, request: Request) -> Response:
        """One run record (SPEC 11): what `fnrun history --json` shows of it."""
        record = await self.view.ingress.store.run(request.path_params["invocation"])
        if record is None:
            return JSONResponse({"error": "no such run (not stored, or past retention)"}, 404)
        return JSONResponse(run_json(record))

    async def trace(self, request: Request) -> Response:
        """The trace tree of one event (SPEC 11): what `fnrun trace --json` prints."""
        found = await tree.trace(self.view.ingress.store, request.path_params["event"])
        if found is None:
            return JSONResponse({"error": "no such event (not stored, or past retention)"}, 404)
        return JSONResponse(found)

    async def dead_letters(self, request: Request) -> Response:
        try:
            function, limit = _filters(request, default_limit=100)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        letters = await self.view.ingress.store.dead_letters(function, limit=limit)
        return JSONResponse([dead_letter_json(d) for d in letters])

    async def store_error(self, request: Request, exc: Exception) -> Response:
        """A `/_/` route's store error, answered as webhooks answer theirs (registered
        with Starlette, whose catch-all would otherwise have answered a text 500 already)."""
        assert isinstance(exc, StoreError)
        return _store_unavailable(request.scope, exc, self.view.ingress.store.outage)


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


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (405 on an API route) as JSON, like every other error."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if "Allow" not in headers:  # as starlette's Route sets it on a 405
        return JSONResponse({"error": exc.detail.lower()}, exc.status_code, headers)
    # Sorted, as webhooks list theirs: Route keeps its methods in a set.
    allow = headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
    return JSONResponse({"error": f"method not allowed (allow: {allow})"}, 405, headers)


def _store_unavailable(scope: Scope, exc: StoreError, outage: StoreOutage) -> Response:
    """503: every route reads or writes the store before it answers, so nothing was
    acknowledged, and the client tries again as it would with a busy server.

    Recorded in `outage` for `/_/health`: with no dispatcher claiming, nothing
    else would tell it (the store's next successful publish clears it).
    """
    outage.failed(exc)
    log.warning("%s %s: %s", scope.get("method"), scope.get("path"), exc)
    return JSONResponse({"error": "store unavailable, try again later"}, 503,
                        {"retry-after": str(STORE_RETRY_AFTER)})


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"error": "not found"}, 404)(scope, receive, send)
