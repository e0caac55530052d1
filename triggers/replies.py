"""A sync webhook's reply: invocation outcome -> a storable answer -> an HTTP response.

The answer is a JSON-safe dict (`status`, `headers`, `kind`, `body`) so the
first reply to an `Idempotency-Key` can be kept in the store and returned
again verbatim.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from starlette.responses import JSONResponse, Response

from runtime.events import Outcome
from runtime.protocol import decode_result

log = logging.getLogger("fnrun.webhook")

_MEDIA = {
    "json": "application/json",
    "text": "text/plain",
    "bytes": "application/octet-stream",
}


def answer(function: str, event_id: str, outcome: Outcome) -> dict[str, Any]:
    """What to reply for `outcome`; failures carry the event id, never the traceback."""
    if outcome.status == "timeout":
        log.error("sync webhook %s timed out (id %s)", function, event_id)
        return _error(504, "function timed out", event_id)
    if not outcome.ok:
        log.error("sync webhook %s failed (id %s): %s\n%s", function, event_id,
                  outcome.error, outcome.traceback or "")
        return _error(500, "function failed", event_id)
    return decode(outcome.result)


def decode(encoded: Any) -> dict[str, Any]:
    """An answer from a result encoded by `runtime.protocol.encode_result`."""
    try:
        status, kind, body, headers = decode_result(encoded)
    except (TypeError, ValueError) as exc:
        log.error("sync webhook result cannot be decoded: %s", exc)
        return _error(500, "function returned an unusable result", None)
    status = 200 if status is None else status
    if not 200 <= status <= 599:
        log.error("sync webhook returned bad HTTP status %r", status)
        return _error(500, "function returned a bad HTTP status", None)
    if kind == "bytes":
        body = base64.b64encode(body).decode("ascii")
    headers = {str(k): str(v) for k, v in headers.items()}
    return {"status": status, "headers": headers, "kind": kind, "body": body}


def response(answer: dict[str, Any]) -> Response:
    """The HTTP response of an answer."""
    status, kind, body = answer["status"], answer["kind"], answer["body"]
    headers = {k.lower(): v for k, v in answer["headers"].items()}
    # A content type the handler chose is sent verbatim (Starlette would add a charset).
    media = None if "content-type" in headers else _MEDIA[kind]
    if status in (204, 304):
        return Response(b"", status, headers)
    if kind == "bytes":
        return Response(base64.b64decode(body), status, headers, media_type=media)
    if kind == "text":
        return Response(body, status, headers, media_type=media)
    return JSONResponse(body, status, headers, media_type=media)


def _error(status: int, message: str, event_id: str | None) -> dict[str, Any]:
    return {"status": status, "headers": {}, "kind": "json",
            "body": {"error": message, "id": event_id}}
