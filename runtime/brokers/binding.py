"""CloudEvents protocol bindings: broker `Message` <-> fnrun `Event`, pure functions.

Where each binding puts the event's attributes in binary mode:

- AMQP (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/amqp-protocol-binding.md):
  application properties `cloudEvents_<name>` (`cloudEvents:<name>` read too),
  the data's media type in the `content-type` property;
- Kafka (.../kafka-protocol-binding.md): headers `ce_<name>`, `content-type`
  header; the message key is the `partitionkey` extension;
- MQTT 5 (.../mqtt-protocol-binding.md): user properties named as the
  attributes, the Content Type property. MQTT 3.1.1 has no properties, so
  only structured mode exists there (`mqtt3`);
- NATS (.../nats-protocol-binding.md): headers `ce-<name>`;
- Redis Streams has no binding: fnrun uses Kafka's header names for fields.

Structured mode is the JSON event format in the body, media type
`application/cloudevents+json`, in every binding. A message in neither mode
becomes an event of the source's type whose data is the JSON body, or the
bytes when the body is not JSON, with the broker's metadata and headers in
its extensions and an id derived from the broker's position when it has one.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from runtime import cloudevents, strict_json
from runtime.brokers.base import BadMessage, Message
from runtime.errors import UsageError
from runtime.events import Event, new_event_id
from runtime.tracing.context import TRACEPARENT, TRACESTATE, trace_extensions

STRUCTURED = cloudevents.STRUCTURED
KINDS = ("amqp", "kafka", "mqtt", "mqtt3", "nats", "redis")
_PREFIXES: Mapping[str, tuple[str, ...]] = {
    "amqp": ("cloudEvents_", "cloudEvents:"),
    "kafka": ("ce_",),
    "redis": ("ce_",),
    "mqtt": ("",),
    "mqtt3": (),
    "nats": ("ce-",),
}
_MAX_ID = 255  # what ctx.emit and cloudevents.check_id take
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""Built once: `json.dumps` with options builds an encoder per call."""


def to_event(kind: str, message: Message, type: str, source: str) -> Event:
    """The event a received `message` stands for.

    Args:
        kind: the binding, one of `KINDS`.
        type: the event type of a message that is not a CloudEvent (the source's `type`).
        source: the CloudEvents `source` of such a message.

    Raises:
        BadMessage: the message claims to be a CloudEvent and is not a valid one.
    """
    try:
        if _media(message.content_type) == STRUCTURED:
            return _keyed(structured_event(message.body), message)
        if kind == "mqtt3" and message.body.lstrip().startswith(b"{"):
            raw = _json_or_none(message.body)
            if isinstance(raw, dict) and "specversion" in raw:
                return cloudevents.structured(raw)
        attributes = _attributes_of(kind, message.headers)
        if "ce-specversion" in attributes:
            if message.content_type:
                attributes["content-type"] = message.content_type
            return _keyed(cloudevents.binary(attributes, message.body), message)
    except UsageError as exc:
        raise BadMessage(f"not a valid CloudEvent: {exc}") from None
    return plain_event(message, type, source)


def structured_event(body: bytes) -> Event:
    """The event in a structured-mode body (raises `UsageError` when it is not one)."""
    try:
        raw = strict_json.loads(body)
    except ValueError as exc:
        raise UsageError(f"invalid JSON: {exc}") from None
    return cloudevents.structured(raw)


def plain_event(message: Message, type: str, source: str) -> Event:
    """An event of `type` carrying a message that is not a CloudEvent."""
    extensions: dict[str, Any] = dict(message.metadata)
    if message.headers:
        extensions["headers"] = dict(message.headers)
    if message.key is not None:
        extensions["partitionkey"] = _text(message.key)
    media = _media(message.content_type)
    data: Any = None
    if message.body:
        data = _json_or_none(message.body) if not media or _is_json(media) else None
        if data is None:
            data = message.body
    # A producer's W3C trace context header (as AMQP and Kafka clients send it), else a new trace.
    headers = message.headers or {}
    extensions.update(trace_extensions(headers.get(TRACEPARENT), headers.get(TRACESTATE)))
    event_id = stable_id(message.position) if message.position else new_event_id()
    return Event(type=type, source=source, id=event_id, data=data, extensions=extensions)


def stable_id(position: str) -> str:
    """An event id for a broker position: the position itself, or its hash when too long."""
    if len(position) <= _MAX_ID and position.isprintable():
        return position
    return "sha256:" + hashlib.sha256(position.encode("utf-8", "surrogatepass")).hexdigest()


def to_message(kind: str, event: Event, structured: bool = False) -> Message:
    """`event` as a message of `kind`, binary mode unless `structured` (or MQTT 3.1.1).

    The message id is the event id, so consumers downstream can dedupe; a
    `partitionkey` extension becomes the Kafka key. Built from the event's
    envelope (`Event.to_dict`), which a claimed event hands over as the store
    keeps it: its time already formatted, its data not parsed back.
    """
    envelope = event.to_dict()
    extensions: Mapping[str, Any] = envelope.get("extensions") or {}
    fields: dict[str, Any] = {"message_id": envelope["id"]}
    key = extensions.get("partitionkey")
    if kind == "kafka" and key is not None:
        fields["key"] = str(key).encode()
    if structured or kind == "mqtt3":
        body = _COMPACT.encode(_structured(envelope, extensions))
        return Message(body=body.encode(), content_type=STRUCTURED, **fields)
    prefix = _PREFIXES[kind][0]
    headers = {prefix + name: _header(value)
               for name, value in _flat(envelope, extensions).items()}
    body_bytes, content_type = _data(envelope, extensions)
    return Message(body=body_bytes, headers=headers, content_type=content_type, **fields)


def _attributes_of(kind: str, headers: Mapping[str, str]) -> dict[str, str]:
    """Binary-mode attributes under their HTTP names (`ce-id`, ...), as `cloudevents` reads them."""
    found: dict[str, str] = {}
    for prefix in _PREFIXES[kind]:
        if not prefix and "specversion" not in headers:
            continue  # MQTT 5: user properties are attributes only on a CloudEvent
        for name, value in headers.items():
            if name.startswith(prefix):
                found["ce-" + name[len(prefix) :]] = value
    return found


def _keyed(event: Event, message: Message) -> Event:
    """Kafka: the key is the partitionkey extension, unless the event names its own."""
    if message.key is None or "partitionkey" in event.extensions:
        return event
    extensions = {**event.extensions, "partitionkey": _text(message.key)}
    return Event(type=event.type, id=event.id, source=event.source, time=event.time,
                 subject=event.subject, data=event.data, extensions=extensions)


def _flat(envelope: Mapping[str, Any], extensions: Mapping[str, Any]) -> dict[str, Any]:
    """The event's context attributes, extensions beside the core ones, data left out."""
    attributes: dict[str, Any] = {
        "specversion": "1.0", "id": envelope["id"], "source": envelope.get("source", "fnrun"),
        "type": envelope["type"], "time": envelope["time"],
    }
    subject = envelope.get("subject")
    if subject is not None:
        attributes["subject"] = subject
    for name, value in extensions.items():
        if name != "datacontenttype":
            attributes[name] = value
    return attributes


def _structured(envelope: Mapping[str, Any], extensions: Mapping[str, Any]) -> dict[str, Any]:
    out = _flat(envelope, extensions)
    if "datacontenttype" in extensions:
        out["datacontenttype"] = extensions["datacontenttype"]
    if "data_base64" in envelope:
        out["data_base64"] = envelope["data_base64"]
    elif envelope.get("data") is not None:
        out["data"] = envelope["data"]
    return out


def _data(envelope: Mapping[str, Any], extensions: Mapping[str, Any]) -> tuple[bytes, str | None]:
    """The body of a binary-mode message and its media type."""
    declared = extensions.get("datacontenttype")
    content_type = declared if isinstance(declared, str) else None
    if "data_base64" in envelope:
        return base64.b64decode(envelope["data_base64"]), content_type or "application/octet-stream"
    data = envelope.get("data")
    if data is None:
        return b"", content_type
    if isinstance(data, str) and content_type and not _is_json(_media(content_type)):
        return data.encode(), content_type
    return _COMPACT.encode(data).encode(), content_type or "application/json"


def _header(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _COMPACT.encode(value)


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")


def _json_or_none(body: bytes) -> Any:
    try:
        return strict_json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()
