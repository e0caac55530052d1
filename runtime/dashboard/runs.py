"""The runs the dashboard lists: a page of them by seq cursor, one run's record,
and a live stream of new ones (server-sent events).

The stream polls `Store.runs(after_seq=cursor)` every `POLL` seconds and sends
what is new, oldest first, each batch under its highest seq as the event id,
so a browser that reconnects (EventSource sends `Last-Event-ID`) resumes where
it stopped. It is bounded: `MAX_STREAMS` at once, `BATCH` rows a message (a
full one is followed at once by the next), `LIFETIME` seconds each (the
browser reconnects). It ends within one poll of the
supervisor starting to stop, so it never holds up SIGTERM.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypedDict

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from runtime.errors import StoreError, UsageError
from runtime.http.records import iso
from runtime.ingress import Ingress
from runtime.store.base import RunRecord

log = logging.getLogger("fnrun.http")

POLL = 0.5
BATCH = 200
MAX_STREAMS = 32
LIFETIME = 300.0
HEARTBEAT = 15.0
PAGE = 50
MAX_PAGE = 200
MAX_ATTEMPTS_SHOWN = 100


class RunsView(Protocol):
    @property
    def ingress(self) -> Ingress: ...

    @property
    def draining(self) -> bool: ...


def row(run: RunRecord) -> dict[str, Any]:
    """A run as one row of the list: no logs, result or traceback (the run page has them)."""
    return {
        "seq": run.seq,
        "invocation": run.invocation,
        "function": run.function,
        "event_id": run.event_id,
        "event_type": run.event_type,
        "attempt": run.attempt,
        "status": run.status,
        "started": iso(run.started),
        "duration_ms": round(run.duration * 1000, 3),
        "error": (run.error or "").partition("\n")[0] or None,
    }


def full(run: RunRecord) -> dict[str, Any]:
    """A run with everything it keeps, for its page."""
    return {
        **row(run),
        "error": run.error,
        "traceback": run.traceback,
        "result": run.result,  # as `runtime.results` encodes it; the page shows its body
        "emitted": list(run.emitted),
        "logs": [{"at": iso(line.at), "stream": line.stream, "level": line.level,
                  "text": line.text} for line in run.logs],
    }


def _cursor(raw: str | None, what: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise UsageError(f"{what} must be a run's seq (a whole number), got {raw[:40]!r}")
    return int(raw)


class Filters(TypedDict):
    """The listing filters, as `Store.runs` names them."""

    function: str | None
    status: str | None
    event_type: str | None


def filters(request: Request) -> Filters:
    """The listing filters of `?function=&status=&type=`."""
    query = request.query_params
    return {"function": query.get("function") or None, "status": query.get("status") or None,
            "event_type": query.get("type") or None}


class Stream:
    """The runs routes of one supervisor; counts its open streams."""

    def __init__(self, view: RunsView) -> None:
        self.view = view
        self.open = 0

    async def listing(self, request: Request) -> Response:
        """`GET /_/ui/api/runs`: newest first, `?before=SEQ` for the next page.

        `head` is the newest seq in the store, read before the page, where the
        stream starts: a run committed meanwhile comes twice, never not at all.
        """
        store = self.view.ingress.store
        try:
            before = _cursor(request.query_params.get("before"), "before")
            raw = request.query_params.get("limit", str(PAGE))
            if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
                raise UsageError(f"limit must be an integer from 1 to {MAX_PAGE}, got {raw!r}")
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        limit, wanted = int(raw), filters(request)
        head = await self._head() if before is None else None
        page = await store.runs(**wanted, before_seq=before, limit=limit)
        return JSONResponse({
            "runs": [row(r) for r in page], "head": head,
            "next": page[-1].seq if len(page) == limit else None,
        })

    async def detail(self, request: Request) -> Response:
        """`GET /_/ui/api/runs/{invocation}`: the run, its event, and every attempt."""
        store = self.view.ingress.store
        run = await store.run(request.path_params["invocation"])
        if run is None:
            return JSONResponse({"error": "no such run (or it is past retention)"}, 404)
        event = await store.event(run.event_id)
        attempts = await store.runs(event_id=run.event_id, function=run.function,
                                    limit=MAX_ATTEMPTS_SHOWN)
        return JSONResponse({
            "run": full(run), "event": None if event is None else event.to_dict(),
            "attempts": [row(r) for r in reversed(attempts)],
        })

    async def events(self, request: Request) -> Response:
        """`GET /_/ui/stream`: new runs as server-sent events (see the module docstring)."""
        try:
            cursor = _cursor(request.headers.get("last-event-id"), "Last-Event-ID")
            if cursor is None:
                cursor = _cursor(request.query_params.get("after"), "after")
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if self.open >= MAX_STREAMS:
            return JSONResponse({"error": f"too many live streams (at most {MAX_STREAMS})"},
                                503, {"retry-after": "5"})
        if cursor is None:
            cursor = await self._head()
        return StreamingResponse(self._feed(filters(request), cursor), media_type=
                                 "text/event-stream", headers={"cache-control": "no-store",
                                                               "x-accel-buffering": "no"})

    async def _head(self) -> int:
        newest = await self.view.ingress.store.runs(limit=1)
        return newest[0].seq if newest else 0

    async def _feed(self, wanted: Filters, cursor: int) -> AsyncIterator[str]:
        if self.open >= MAX_STREAMS:  # others opened since `events` looked
            yield "event: full\ndata: {}\n\n"
            return
        self.open += 1  # here, where `finally` is sure to undo it
        try:
            yield "retry: 1000\n\n"
            async for message in self._poll(wanted, cursor):
                yield message
        except StoreError as exc:
            # The answer has started: it cannot become a 503. The browser reconnects
            # (after `retry`) from the last id it got, and gets the 503 while it lasts.
            log.warning("dashboard stream: %s", exc)
        finally:
            self.open -= 1

    async def _poll(self, wanted: Filters, cursor: int) -> AsyncIterator[str]:
        """The stream's messages after `cursor`, until the supervisor stops or `LIFETIME`."""
        store, filtered = self.view.ingress.store, any(wanted.values())
        started = quiet = time.monotonic()
        while not self.view.draining and time.monotonic() - started < LIFETIME:
            # Filtered, the cursor moves on to the head even when nothing matched, so
            # that no poll scans further back than the previous one.
            head = await self._head() if filtered else cursor
            new = await store.runs(**wanted, after_seq=cursor, limit=BATCH)
            if new:
                # Fewer than asked: every match up to `head` is in hand.
                cursor = new[0].seq if len(new) == BATCH else max(new[0].seq, head)
                quiet = time.monotonic()
                rows = json.dumps([row(r) for r in reversed(new)], separators=(",", ":"))
                yield f"id: {cursor}\ndata: {rows}\n\n"
                if len(new) == BATCH:
                    continue  # more are waiting: no pause
            else:
                cursor = max(cursor, head)
                if time.monotonic() - quiet > HEARTBEAT:
                    quiet = time.monotonic()
                    yield ": ping\n\n"
            await anyio.sleep(POLL)
