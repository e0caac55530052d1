"""The dashboard's routes: the page, its files, the login, and its writes.

Reads go to fnrun's JSON API (`/_/functions`, `/_/dead-letters`, ...) and to
`runtime.dashboard.runs`; writes come here, each checked by `Gate.forged`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import anyio
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from runtime import cloudevents
from runtime.dashboard import runs
from runtime.dashboard.gate import Gate
from runtime.errors import UsageError
from runtime.events import Event
from runtime.ingress import Ingress
from runtime.specs import Settings

STATIC = Path(__file__).parent / "static"
BODY_TIMEOUT = 30.0
HEADERS = {
    # Every asset is fnrun's own; no page may frame the dashboard (its Replay buttons).
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class DashboardView(Protocol):
    """What the dashboard reads from the running supervisor (part of `RuntimeView`)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def ingress(self) -> Ingress: ...

    @property
    def draining(self) -> bool: ...


@dataclass
class Dashboard:
    """The `/_/ui` routes of one supervisor, and the gate its front door consults."""

    view: DashboardView
    gate: Gate

    @property
    def routes(self) -> list[BaseRoute]:
        stream = runs.Stream(self.view)
        return [
            Route("/_/ui", self.page),
            Route("/_/ui/login", self.login, methods=["GET", "POST"]),
            Route("/_/ui/api/session", self.session),
            Route("/_/ui/api/runs", stream.listing),
            Route("/_/ui/api/runs/{invocation:path}", stream.detail),
            Route("/_/ui/stream", stream.events),
            Route("/_/ui/api/events", self.send, methods=["POST"]),
            Route("/_/ui/api/dead-letters/{id:path}/replay", self.replay, methods=["POST"]),
            Mount("/_/ui/static", StaticFiles(directory=STATIC), name="static"),
        ]

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    async def session(self, request: Request) -> Response:
        """What the page needs before it writes: its CSRF token."""
        return JSONResponse({"csrf": self.gate.csrf(request.scope),
                             "login": self.gate.sessions is not None}, headers=HEADERS)

    async def login(self, request: Request) -> Response:
        """Exchange a one-time code (GET: the printed link, then on to the dashboard) or
        the token itself (POST `{"token": ...}` from the page's login form) for a
        session cookie."""
        sessions, now = self.gate.sessions, self.gate.clock()
        if sessions is None:
            return RedirectResponse("/_/ui", 303)
        if request.method == "GET":
            if not sessions.redeem(request.query_params.get("code", ""), now):
                return _refused("this login link is used, expired or wrong", 401)
            response: Response = RedirectResponse("/_/ui", 303, headers=HEADERS)
        else:
            # No CSRF token yet (that needs a session): the Origin check alone.
            refusal = self.gate.forged(request.scope, csrf=False)
            if refusal is not None:
                return JSONResponse({"error": refusal}, 403)
            try:
                token = (await self._json_body(request)).get("token")
            except UsageError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            if not (isinstance(token, str) and self.gate.token_matches(token)):
                return _refused("wrong token", 401)
            response = JSONResponse({"login": True}, headers=HEADERS)
        response.headers.append("set-cookie", self.gate.set_cookie(request.scope))
        return response

    async def send(self, request: Request) -> Response:
        """The Send event form: `{"type": T, "data": JSON}` published as a CloudEvent."""
        refusal = self.gate.forged(request.scope)
        if refusal is not None:
            return JSONResponse({"error": refusal}, 403)
        ingress = self.view.ingress
        if not ingress.accepting:
            return JSONResponse({"error": "not accepting events (starting or stopping)"}, 503)
        try:
            body = await self._json_body(request)
            event = cloudevents.structured({
                "specversion": "1.0", "id": str(uuid.uuid4()), "source": "fnrun/ui",
                "type": body.get("type"), "data": body.get("data"),
                "datacontenttype": "application/json",
            })
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        await ingress.publish([event])
        return JSONResponse({"id": event.id, "matched": len(ingress.targets(event.type))}, 202)

    async def replay(self, request: Request) -> Response:
        """Replay a dead letter as it was, or with edited data (`{"data": ...}`).

        Edited, it is a new event (a new id: ids are idempotency keys) for the
        dead letter's function only, published before the dead letter is
        dropped: a crash between the two leaves both, never neither.
        """
        refusal = self.gate.forged(request.scope)
        if refusal is not None:
            return JSONResponse({"error": refusal}, 403)
        letter_id = request.path_params["id"]
        store, now = self.view.ingress.store, self.view.ingress.clock.now()
        try:
            body = await self._json_body(request)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if "data" not in body:
            if not await store.replay_dead(now, ids=[letter_id]):
                return JSONResponse({"error": f"no dead letter {letter_id!r}"}, 404)
            return JSONResponse({"replayed": letter_id}, 202)
        letters = await store.dead_letters(ids=[letter_id], limit=1)
        if not letters:
            return JSONResponse({"error": f"no dead letter {letter_id!r}"}, 404)
        letter = letters[0]
        event = edited(letter.event, body["data"], now)
        await store.publish([(event, [letter.function])])
        await store.drop_dead(ids=[letter_id])
        return JSONResponse({"replayed": letter_id, "event": event.id}, 202)

    async def _json_body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object, read within the body limit.

        Raises:
            UsageError: too big, too slow, not JSON or not an object.
        """
        limit = self.view.settings.http.max_body
        chunks, size = [], 0
        with anyio.move_on_after(BODY_TIMEOUT):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise UsageError(f"body over the {limit} byte limit")
                chunks.append(chunk)
            raw = b"".join(chunks) or b"{}"
            try:
                body = json.loads(raw)
            except ValueError:
                raise UsageError("the body is not JSON") from None
            if not isinstance(body, dict):
                raise UsageError("the body must be a JSON object")
            return body
        raise UsageError(f"body not received within {BODY_TIMEOUT:g}s")


def edited(event: Event, data: Any, now: float) -> Event:
    """The event a dead letter's edited replay publishes: the same event with new data,
    a new id, and `fnrunreplayof` naming the event it replays."""
    extensions = {**event.extensions, "fnrunreplayof": event.id}
    return replace(event, id=str(uuid.uuid4()), data=data, extensions=extensions,
                   time=datetime.fromtimestamp(now, UTC))


def _refused(message: str, status: int) -> Response:
    return JSONResponse({"error": message + ": open the login link `fnrun dev` prints, or "
                         "paste FNRUN_TOKEN into the dashboard's login form"}, status)
