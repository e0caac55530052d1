"""CloudEvents protocol bindings, message <-> event, from tables of cases (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from runtime.brokers import binding
from runtime.brokers.base import BadMessage, Message
from runtime.events import Event
from runtime.tracing.context import parse

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ATTRIBUTES = {"specversion": "1.0", "id": "ev-1", "type": "order.created", "source": "/shop",
              "subject": "o-7", "time": "2026-12-07T21:00:00+00:00", "traceparent": TRACE}
BINARY_HEADERS = {
    "amqp": {f"cloudEvents_{k}": v for k, v in ATTRIBUTES.items()},
    "amqp-colon": {f"cloudEvents:{k}": v for k, v in ATTRIBUTES.items()},
    "kafka": {f"ce_{k}": v for k, v in ATTRIBUTES.items()},
    "redis": {f"ce_{k}": v for k, v in ATTRIBUTES.items()},
    "mqtt": dict(ATTRIBUTES),
    "nats": {f"ce-{k}": v for k, v in ATTRIBUTES.items()},
}


@pytest.mark.parametrize("case", sorted(BINARY_HEADERS))
def test_binary_mode_keeps_id_type_source_subject_time_and_extensions(case: str) -> None:
    kind = case.split("-")[0]
    message = Message(b'{"total": 3}', BINARY_HEADERS[case], "application/json")
    event = binding.to_event(kind, message, "ignored.type", "/ignored")
    assert (event.id, event.type, event.source, event.subject) == ("ev-1", "order.created",
                                                                  "/shop", "o-7")
    assert event.time == datetime(2026, 12, 7, 21, tzinfo=UTC)
    assert event.extensions["traceparent"] == TRACE
    assert event.data == {"total": 3}


@pytest.mark.parametrize("kind", ["amqp", "kafka", "mqtt", "mqtt3", "nats", "redis"])
def test_structured_mode_is_read_in_every_binding(kind: str) -> None:
    body = json.dumps({**ATTRIBUTES, "data_base64": "AAEC"}).encode()
    content_type = None if kind == "mqtt3" else "application/cloudevents+json; charset=utf-8"
    event = binding.to_event(kind, Message(body, {}, content_type), "ignored.type", "/x")
    assert (event.id, event.type, event.data) == ("ev-1", "order.created", b"\x00\x01\x02")


@pytest.mark.parametrize(
    ("kind", "headers", "body", "content_type", "why"),
    [
        ("kafka", {"ce_specversion": "0.3", "ce_id": "1", "ce_type": "a", "ce_source": "/"},
         b"", None, "specversion"),
        ("nats", {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/"}, b"", None, "'type'"),
        ("amqp", {"cloudEvents_specversion": "1.0", "cloudEvents_id": "1",
                  "cloudEvents_type": "no spaces allowed", "cloudEvents_source": "/"},
         b"", None, "dot-separated"),
        ("kafka", {}, b"{not json", "application/cloudevents+json", "invalid JSON"),
        ("mqtt", {"specversion": "1.0", "id": "1", "type": "a.b", "source": "/",
                  "Bad-Name": "x"}, b"", None, "extension attribute name"),
    ],
)
def test_a_malformed_cloudevent_is_one_bad_message_line(
    kind: str, headers: dict[str, str], body: bytes, content_type: str | None, why: str
) -> None:
    with pytest.raises(BadMessage, match=why) as raised:
        binding.to_event(kind, Message(body, headers, content_type), "t.t", "/s")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("message", "data", "event_id", "extensions"),
    [
        (Message(b'{"a": 1}', position="kafka:clicks:2:17", key=b"user-9",
                 metadata={"topic": "clicks", "partition": 2, "offset": 17}),
         {"a": 1}, "kafka:clicks:2:17",
         {"topic": "clicks", "partition": 2, "offset": 17, "partitionkey": "user-9"}),
        (Message(b"\xff\x00 binary", position="nats:JOBS:5", metadata={"sequence": 5}),
         b"\xff\x00 binary", "nats:JOBS:5", {"sequence": 5}),
        (Message(b"42", {"x-origin": "erp"}, position="redis:orders:1-0"),
         42, "redis:orders:1-0", {"headers": {"x-origin": "erp"}}),
        (Message(b'{"a": 1}', content_type="text/plain", position="amqp:q:m-1"),
         b'{"a": 1}', "amqp:q:m-1", {}),
        (Message(b"", metadata={"topic": "t"}), None, None, {"topic": "t"}),
    ],
    ids=["kafka-json-key", "nats-bytes", "redis-headers", "amqp-text", "mqtt-empty"],
)
def test_a_plain_message_is_an_event_of_the_source_type(
    message: Message, data: object, event_id: str | None, extensions: dict[str, object]
) -> None:
    event = binding.to_event("kafka", message, "click.recorded", "/sources/clicks")
    assert (event.type, event.source, event.data) == ("click.recorded", "/sources/clicks", data)
    assert parse(event.extensions["traceparent"]) is not None  # a new trace
    assert {k: v for k, v in event.extensions.items() if k != "traceparent"} == extensions
    if event_id is not None:
        assert event.id == event_id
        assert binding.to_event("kafka", message, "click.recorded", "/x").id == event_id
    else:  # no broker position: a fresh id each time
        assert binding.to_event("kafka", message, "click.recorded", "/x").id != event.id


def test_a_plain_message_keeps_its_producers_trace_context() -> None:
    headers = {"traceparent": TRACE, "tracestate": "vendor=1"}
    event = binding.to_event("kafka", Message(b"1", headers), "click.recorded", "/s")
    assert (event.extensions["traceparent"], event.extensions["tracestate"]) == (
        TRACE, "vendor=1")


def test_a_position_too_long_for_an_id_is_hashed_stably() -> None:
    position = "kafka:" + "t" * 300 + ":0:1"
    assert binding.stable_id(position) == binding.stable_id(position)
    assert binding.stable_id(position).startswith("sha256:")
    assert len(binding.stable_id(position)) <= 255


EVENTS = [
    Event(type="a.b", id="e-1", source="/s", subject="x", data={"k": [1, 2]},
          extensions={"tenant": "acme", "partitionkey": "p-1"}),
    Event(type="a.b", id="e-2", source="/s", data=b"\x00raw"),
    Event(type="a.b", id="e-3", source="/s", data=None),
    Event(type="a.b", id="e-4", source="/s", data="plain text",
          extensions={"datacontenttype": "text/plain"}),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.id)
@pytest.mark.parametrize("kind", ["amqp", "kafka", "mqtt", "mqtt3", "nats", "redis"])
@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_event_to_message_and_back_keeps_the_event(
    event: Event, kind: str, structured: bool
) -> None:
    message = binding.to_message(kind, event, structured=structured)
    assert message.message_id == event.id
    back = binding.to_event(kind, message, "other.type", "/other")
    assert (back.id, back.type, back.source, back.subject, back.time) == (
        event.id, event.type, event.source, event.subject, event.time)
    if isinstance(event.data, str) and not structured and kind != "mqtt3":
        assert back.data == event.data.encode()  # binary mode: text/plain data is bytes
    else:
        assert back.data == event.data
    for name, value in event.extensions.items():
        assert back.extensions[name] == value


def test_binary_mode_names_each_attribute_as_its_binding_says() -> None:
    event = EVENTS[0]
    assert binding.to_message("kafka", event).headers["ce_id"] == "e-1"
    assert binding.to_message("kafka", event).key == b"p-1"  # partitionkey is the Kafka key
    assert binding.to_message("amqp", event).headers["cloudEvents_tenant"] == "acme"
    assert binding.to_message("nats", event).headers["ce-type"] == "a.b"
    assert binding.to_message("mqtt", event).headers["subject"] == "x"
    assert binding.to_message("mqtt3", event).content_type == "application/cloudevents+json"
    assert binding.to_message("amqp", EVENTS[1]).content_type == "application/octet-stream"
