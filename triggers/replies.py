"""A sync webhook's reply: invocation outcome -> a storable answer -> an HTTP response.

The answer is a JSON-safe dict (`status`, `headers`, `kind`, `body`) so the
first reply to an `Idempotency-Key` can be kept in the store and returned
again verbatim.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from starlette.types import Send

from runtime.events import Outcome
from runtime.results import decode_result

log = logging.getLogger("fnrun.webhook")

_MEDIA = {
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
    "bytes": "application/octet-stream",
}


_RAW_MEDIA = {media: media.encode() for media in _MEDIA.values()}
_TEXT = (b"content-type", _RAW_MEDIA[_MEDIA["text"]])
_JSON = (b"content-type", _RAW_MEDIA[_MEDIA["json"]])


class Reply(NamedTuple):
    """An HTTP response ready for ASGI: status, raw headers, body.

    Webhooks send these directly: building a Starlette Response per request
    cost more than the rest of a no-op webhook (measured under wrk).
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    async def __call__(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def json_reply(status: int, content: Any, headers: Mapping[str, str] | None = None) -> Reply:
    """A compact JSON reply, as Starlette's JSONResponse renders it."""
    return _reply(status, _json(content), "application/json", headers or {})


def answer(function: str, event_id: str, outcome: Outcome) -> dict[str, Any]:
    """What to reply for `outcome`; failures carry the event id, never the traceback."""
    if outcome.status == "timeout":
        log.error("sync webhook %s timed out (id %s)", function, event_id)
        return _error(504, "function timed out", event_id)
    if not outcome.ok:
        log.error("sync webhook %s failed (id %s): %s\n%s", function, event_id,
                  outcome.error, outcome.traceback or "")
        return _error(500, "function failed", event_id)
    try:
        return decode(outcome.result)
    except (TypeError, ValueError) as exc:
        return _unusable(function, event_id, exc)


def reply(function: str, event_id: str, outcome: Outcome) -> Reply:
    """`response(..., answer(...))`, without the storable answer in between when nothing
    stores it.

    A handler's plain JSON or text return value goes straight to its reply.
    """
    result = outcome.result
    if outcome.status == "ok" and type(result) is dict and len(result) == 1:
        try:
            text = result.get("text")
            if type(text) is str:
                body, media = text.encode(), _TEXT
            elif "json" in result:
                body, media = _json(result["json"]), _JSON
            else:
                return response(function, event_id, answer(function, event_id, outcome))
        except (UnicodeEncodeError, ValueError):
            pass  # a lone surrogate or NaN: the full path logs it and answers 500
        else:
            return Reply(200, [(b"content-length", b"%d" % len(body)), media], body)
    return response(function, event_id, answer(function, event_id, outcome))


def decode(encoded: Any) -> dict[str, Any]:
    """An answer from a result encoded by `runtime.results.encode_result`.

    Raises:
        TypeError, ValueError: it cannot be decoded, or its status is out of range.
    """
    status, kind, body, headers = decode_result(encoded)
    status = 200 if status is None else status
    if not 200 <= status <= 599:
        raise ValueError(f"HTTP status {status!r} is not from 200 to 599")
    if kind == "bytes":
        body = base64.b64encode(body).decode("ascii")
    headers = {str(k): str(v) for k, v in headers.items()}
    return {"status": status, "headers": headers, "kind": kind, "body": body}


def response(function: str, event_id: str, answer: dict[str, Any]) -> Reply:
    """The HTTP reply of an answer; a content type the handler chose is sent verbatim.

    An answer HTTP cannot carry (NaN in its JSON, a lone surrogate in its text,
    a header value outside latin-1: the worker passes them as Python values)
    becomes a 500 carrying the event id, as a failure does.
    """
    status, kind, body = answer["status"], answer["kind"], answer["body"]
    headers = {str(k).lower(): str(v) for k, v in answer["headers"].items()}
    try:
        if status in (204, 304):
            return _reply(status, b"", None, headers)
        if kind == "bytes":
            content = base64.b64decode(body)
        elif kind == "text":
            content = body.encode()
        else:
            content = _json(body)
        return _reply(status, content, _MEDIA[kind], headers)
    except (UnicodeEncodeError, ValueError) as exc:
        return response(function, event_id, _unusable(function, event_id, exc))


def _reply(status: int, body: bytes, media: str | None, headers: Mapping[str, str]) -> Reply:
    """Raises UnicodeEncodeError for a header that is not latin-1."""
    if not headers and media is not None and not (status < 200 or status in (204, 304)):
        return Reply(status, [(b"content-length", b"%d" % len(body)),
                              (b"content-type", _RAW_MEDIA[media])], body)
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if "content-length" not in headers and not (status < 200 or status in (204, 304)):
        raw.append((b"content-length", str(len(body)).encode()))
    if media is not None and "content-type" not in headers:
        raw.append((b"content-type", media.encode()))
    return Reply(status, raw, body)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""Built once: `json.dumps` with options builds an encoder per call (measured: 40% of it)."""


def _json(content: Any) -> bytes:
    return _ENCODER.encode(content).encode()


def _unusable(function: str, event_id: str, exc: Exception) -> dict[str, Any]:
    log.error("sync webhook %s returned an unusable result (id %s): %s", function, event_id, exc)
    return _error(500, "function returned an unusable result", event_id)


def _error(status: int, message: str, event_id: str) -> dict[str, Any]:
    return {"status": status, "headers": {}, "kind": "json",
            "body": {"error": message, "id": event_id}}
