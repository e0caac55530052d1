"""CloudEvents 1.0 over HTTP, inbound: structured, binary and batch modes -> Events.

https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
Pure: (content type, headers, body) in, events out, `UsageError` with a
message fit for a 400 answer on anything malformed. An event's type and id
must be what a handler's `ctx.emit` takes (`check_type`, `check_id`), as for
`fnrun emit`: a type no trigger pattern can match would be stored and
delivered to nobody, and an id is shown one per line in tables and logs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from runtime import strict_json
from runtime.errors import UsageError
from runtime.event_names import ID_RULE, TYPE_RULE, is_event_id, is_event_type
from runtime.events import Event
from runtime.tracing.context import TRACEPARENT, TRACESTATE, trace_extensions

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH = 1000
_CORE = {"specversion", "id", "source", "type", "subject", "time", "datacontenttype",
         "dataschema", "data", "data_base64"}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")


class MediaTypeError(UsageError):
    """A `POST /_/events` request in none of the CloudEvents modes (answer 415)."""


def parse(headers: Mapping[str, str], body: bytes) -> list[Event]:
    """The events of one `POST /_/events` request.

    Args:
        headers: request headers with lower-case names.

    Raises:
        UsageError: not a CloudEvents request, or an invalid event.
    """
    media = _media(headers.get("content-type", ""))
    if media == BATCH:
        items = _json(body)
        if not isinstance(items, list):
            raise UsageError("a CloudEvents batch must be a JSON array")
        if len(items) > MAX_BATCH:
            raise UsageError(f"a batch holds at most {MAX_BATCH} events, got {len(items)}")
        return [structured(item, f"event {i}: ") for i, item in enumerate(items)]
    if media == STRUCTURED:
        return [structured(_json(body))]
    if "ce-specversion" in headers:
        return [binary(headers, body)]
    raise MediaTypeError(
        f"send {STRUCTURED}, {BATCH}, or binary mode (ce-specversion, ce-id, ce-source, "
        "ce-type headers)"
    )


def structured(raw: Any, where: str = "") -> Event:
    """One event from its JSON object form."""
    if not isinstance(raw, dict):
        raise UsageError(f"{where}a CloudEvent must be a JSON object")
    attrs = {k: v for k, v in raw.items() if k not in ("data", "data_base64")}
    if "data_base64" in raw:
        try:
            data: Any = base64.b64decode(raw["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise UsageError(f"{where}data_base64 is not base64") from None
    else:
        data = raw.get("data")
    return _event(attrs, data, where)


def binary(headers: Mapping[str, str], body: bytes) -> Event:
    """One event from `ce-*` headers (attributes) and the body (data)."""
    attrs: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
    media = _media(headers.get("content-type", ""))
    if media:
        attrs["datacontenttype"] = headers["content-type"]
    data: Any = None
    if body:
        data = _json(body) if media == "application/json" or media.endswith("+json") else body
    return _event(attrs, data, "")


def check_type(what: str, value: str) -> None:
    """Refuse an event type `ctx.emit` would refuse (SPEC 4): it could never match a trigger.

    Raises:
        UsageError: `what`, then why, e.g. "type 'ping.*' is not dot-separated ...".
    """
    if not is_event_type(value):
        raise UsageError(f"{what} {value!r:.80} is not {TYPE_RULE}")


def check_id(what: str, value: str) -> None:
    """Refuse an event id `ctx.emit` would refuse: tables and logs show one per line.

    Raises:
        UsageError: `what`, then why, e.g. "id 'a\\nb' is not 1 to 255 printable characters".
    """
    if not is_event_id(value):
        raise UsageError(f"{what} {value!r:.80} is not {ID_RULE}")


def _event(attrs: Mapping[str, Any], data: Any, where: str) -> Event:
    if attrs.get("specversion") != "1.0":
        raise UsageError(f"{where}specversion must be \"1.0\", got {attrs.get('specversion')!r}")
    for name in ("id", "source", "type"):
        value = attrs.get(name)
        if not isinstance(value, str) or not value:
            raise UsageError(f"{where}required attribute {name!r} is missing or empty")
    check_id(f"{where}id", attrs["id"])
    check_type(f"{where}type", attrs["type"])
    subject = attrs.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise UsageError(f"{where}subject must be a string")
    extensions: dict[str, Any] = {}
    for name, value in attrs.items():
        if name in _CORE:
            continue
        if not _EXTENSION_NAME.fullmatch(name):
            raise UsageError(f"{where}bad extension attribute name {name!r} (a-z0-9, up to 20)")
        extensions[name] = value
    for name in ("datacontenttype", "dataschema"):
        if name in attrs:
            extensions[name] = attrs[name]
    # A bad traceparent starts a new trace rather than refusing the event (W3C 3.2.2).
    extensions.update(trace_extensions(extensions.pop(TRACEPARENT, None),
                                       extensions.pop(TRACESTATE, None)))
    fields: dict[str, Any] = {}
    if "time" in attrs:
        fields["time"] = _time(attrs["time"], where)
    return Event(type=attrs["type"], id=attrs["id"], source=attrs["source"], subject=subject,
                 data=data, extensions=extensions, **fields)


def _time(value: Any, where: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise UsageError(f"{where}time {value!r} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise UsageError(f"{where}time {value!r} needs a UTC offset (e.g. Z)")
    return parsed


def _json(body: bytes) -> Any:
    try:
        return strict_json.loads(body)
    except ValueError as exc:
        raise UsageError(f"invalid JSON: {exc}") from None


def _media(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()
