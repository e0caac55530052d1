"""Pure parts of the broker wiring, from tables: what a reload restarts (`hub.plan`), the
reconnect delay (`links.backoff`), a sink's templates (`render`) and the fields each
broker kind takes (`misfit`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.brokers.declarations import misfit, render
from runtime.brokers.hub import Plan, plan
from runtime.brokers.links import MAX_BACKOFF, MIN_BACKOFF, backoff
from runtime.brokers.sinks import SinkPublisher
from runtime.brokers.specs import BrokerSpec, SinkSpec, SourceSpec
from runtime.clock import SystemClock
from runtime.errors import Where
from runtime.events import Event


def at(line: int) -> Where:
    return Where(Path("fnrun.yaml"), line, 1)


def broker(url: str, line: int = 1) -> BrokerSpec:
    return BrokerSpec("b", at(line), url=url, kind="amqp")


def source(name: str, queue: str = "q", broker: str = "b", line: int = 1) -> SourceSpec:
    return SourceSpec(name, at(line), broker=broker, type="t.in", queue=queue)


A, B = broker("amqp://a/"), broker("amqp://b/")
CASES = [
    ("nothing to nothing", {}, {}, {}, {}, Plan()),
    ("first start", {}, {}, {"b": A}, {"s": source("s")},
     Plan(start_links=("b",), start_sources=("s",))),
    ("moved, not changed", {"b": A}, {"s": source("s")}, {"b": broker("amqp://a/", 9)},
     {"s": source("s", line=9)}, Plan()),
    ("source changed", {"b": A}, {"s": source("s")}, {"b": A}, {"s": source("s", "q2")},
     Plan(stop_sources=("s",), start_sources=("s",))),
    ("source removed", {"b": A}, {"s": source("s"), "t": source("t")}, {"b": A},
     {"t": source("t")}, Plan(stop_sources=("s",))),
    ("broker changed restarts its sources", {"b": A}, {"s": source("s")}, {"b": B},
     {"s": source("s")},
     Plan(stop_links=("b",), start_links=("b",), stop_sources=("s",), start_sources=("s",))),
    ("broker and its source removed", {"b": A}, {"s": source("s")}, {}, {},
     Plan(stop_links=("b",), stop_sources=("s",))),
]


@pytest.mark.parametrize(("old_b", "old_s", "new_b", "new_s", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(old_b: dict[str, BrokerSpec], old_s: dict[str, SourceSpec],
              new_b: dict[str, BrokerSpec], new_s: dict[str, SourceSpec], expected: Plan) -> None:
    assert plan(old_b, old_s, new_b, new_s) == expected


@pytest.mark.parametrize(("failures", "low", "high"), [
    (1, MIN_BACKOFF / 2, MIN_BACKOFF), (2, MIN_BACKOFF, 2 * MIN_BACKOFF),
    (5, 8 * MIN_BACKOFF, 16 * MIN_BACKOFF), (20, MAX_BACKOFF / 2, MAX_BACKOFF),
    (10_000, MAX_BACKOFF / 2, MAX_BACKOFF),
])
def test_backoff_doubles_with_jitter_and_is_capped(failures: int, low: float, high: float) -> None:
    assert backoff(failures, lambda: 0.0) == pytest.approx(low)
    assert backoff(failures, lambda: 1.0) == pytest.approx(high)


@pytest.mark.parametrize(("template", "attributes", "expected"), [
    ("{type}", {"type": "order.created"}, "order.created"),
    ("events.{type}.{subject}", {"type": "a", "subject": "s1"}, "events.a.s1"),
    ("x.{subject}", {"type": "a", "subject": None}, "x."),
    ("plain", {"type": "a"}, "plain"),
])
def test_render(template: str, attributes: dict[str, str | None], expected: str) -> None:
    assert render(template, attributes) == expected


def test_a_sink_fills_its_templates_per_event() -> None:
    spec = SinkSpec("out", at(1), broker="b", events="**", exchange="x", routing_key="{type}")
    publisher = SinkPublisher(spec, lambda: None, SystemClock())
    endpoint = publisher.endpoint(Event(type="notify.mail", source="s", subject="u1"))
    assert (endpoint.exchange, endpoint.routing_key, endpoint.queue) == ("x", "notify.mail", None)
    nats = SinkSpec("out", at(1), broker="b", events="**", subject="res.{type}.{subject}")
    endpoint = SinkPublisher(nats, lambda: None, SystemClock()).endpoint(
        Event(type="a.b", subject="u1"))
    assert endpoint.subject == "res.a.b.u1"


@pytest.mark.anyio
async def test_a_sink_without_its_broker_fails_the_attempt() -> None:
    spec = SinkSpec("out", at(1), broker="gone", events="**", queue="q")
    outcome = await SinkPublisher(spec, lambda: None, SystemClock()).publish(Event(type="a"))
    assert outcome.status == "error" and "'gone' is not declared" in (outcome.error or "")


def sink(**fields: str) -> SinkSpec:
    return SinkSpec("out", at(1), broker="b", events="a.*", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kind", "spec", "given", "expected"), [
    ("amqp", source("s"), ["broker", "type", "queue"], None),
    ("amqp", source("s"), ["broker", "type", "queue", "topic"], "topic"),
    ("kafka", source("s"), ["broker", "type", "topic", "group", "from"], None),
    ("kafka", source("s"), ["broker", "type"], "needs 'topic'"),
    ("nats", source("s"), ["broker", "type", "subject", "stream", "durable"], None),
    ("mqtt", source("s"), ["broker", "type", "topic", "qos", "client_id"], None),
    ("redis", source("s"), ["broker", "type", "stream", "group", "consumer", "from"], None),
    ("redis", source("s"), ["broker", "type", "stream", "queue"], "queue"),
    ("amqp", sink(exchange="x"), ["broker", "events", "exchange", "routing_key"], None),
    ("amqp", sink(), ["broker", "events"], "a queue or an exchange"),
    ("amqp", sink(), ["broker", "events", "queue", "routing_key"], "needs an exchange"),
    ("kafka", sink(), ["broker", "events", "topic", "format", "retry"], None),
    ("nats", sink(), ["broker", "events", "subject", "group"], "group"),
])
def test_misfit(kind: str, spec: SourceSpec | SinkSpec, given: list[str],
                expected: str | None) -> None:
    found = misfit(kind, spec, given)
    if expected is None:
        assert found is None
    else:
        assert found is not None and expected in (found[0] or "") + found[1], found
