"""The adapter contract, run against every real broker (RabbitMQ, Kafka on Tansu, NATS
JetStream, Mosquitto, Redis): confirmed publishes are all consumed, `prefetch` bounds what is
unacknowledged, what was not acknowledged comes back after the connection is cut, and
CloudEvents keep their attributes between fnrun's adapter and each broker's own client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from runtime.brokers import binding
from runtime.brokers.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    Endpoint,
    Message,
    Received,
    open_broker,
)
from runtime.brokers.links import Link
from runtime.brokers.sinks import SinkPublisher
from runtime.brokers.specs import BrokerSpec, SinkSpec
from runtime.clock import SystemClock
from runtime.errors import Where
from runtime.events import Event
from tests.runtime.brokers.rigs import Rig, body_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

N = 300
PREFIX = {"amqp": "cloudEvents_", "kafka": "ce_", "mqtt": "", "nats": "ce-", "redis": "ce_"}
"""Each binding's attribute prefix, spelled out here as the CloudEvents specs spell it."""


async def until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], within: float = 20
                ) -> None:
    """Wait for `check()` to hold, polling, failing after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.05)


@asynccontextmanager
async def opened(rig: Rig) -> AsyncIterator[Broker]:
    broker = open_broker(rig.url)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


@asynccontextmanager
async def consuming(broker: Broker, endpoint: Endpoint, prefetch: int, ack: bool
                    ) -> AsyncIterator[list[Received]]:
    """Consume in the background into a list (acking each one if `ack`) until the block ends."""
    got: list[Received] = []

    async def run() -> None:
        async with aclosing(broker.consume(endpoint, prefetch)) as messages:
            async for received in messages:
                got.append(received)
                if ack:
                    await received.ack()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        try:
            yield got
        finally:
            group.cancel_scope.cancel()


def numbers(received: list[Received]) -> list[int]:
    return [json.loads(r.message.body)["n"] for r in received]


async def test_every_confirmed_publish_is_consumed_and_acknowledged(rig: Rig) -> None:
    async with opened(rig) as broker:
        for i in range(N):
            await broker.publish(rig.endpoint(), Message(body_of(i), {"n": str(i)},
                                                         "application/json"))
        async with consuming(broker, rig.endpoint(), prefetch=50, ack=True) as got:
            await until(lambda: len(got) >= N)
        assert sorted(numbers(got)) == list(range(N))
    if rig.checks_unsettled:
        # The adapter is closed: anything not acknowledged would be back in the broker's count.
        await until(lambda: _none_unsettled(rig))


async def _none_unsettled(rig: Rig) -> bool:
    return await rig.unsettled() == 0


async def test_a_batch_published_at_once_is_settled_message_by_message(rig: Rig) -> None:
    settled: list[tuple[int, BrokerError | None]] = []
    batch = [(rig.endpoint(), Message(body_of(i), {"n": str(i)}, "application/json"))
             for i in range(N)]
    async with opened(rig) as broker:
        await broker.publish_many(batch, lambda index, error: settled.append((index, error)))
        assert sorted(index for index, _ in settled) == list(range(N)), "each settled once"
        assert [error for _, error in settled if error is not None] == []
        async with consuming(broker, rig.endpoint(), prefetch=100, ack=True) as got:
            await until(lambda: len(got) >= N)
        assert sorted(numbers(got)) == list(range(N))


async def test_prefetch_bounds_unacknowledged_messages(rig: Rig) -> None:
    for i in range(8):
        await rig.native_publish(body_of(i), {}, "application/json")
    async with opened(rig) as broker, consuming(broker, rig.endpoint(), 3, ack=False) as got:
        await until(lambda: len(got) == 3)
        with anyio.move_on_after(0.5):
            await until(lambda: len(got) > 3)
        assert len(got) == 3, "a fourth message came with three unacknowledged"
        await got[0].ack()
        await until(lambda: len(got) == 4)
        with anyio.move_on_after(0.3):
            await until(lambda: len(got) > 4)
        assert len(got) == 4, "one acknowledgement let more than one message through"


async def test_unacknowledged_messages_come_back_after_the_connection_is_cut(rig: Rig) -> None:
    for i in range(10):
        await rig.native_publish(body_of(i), {}, "application/json")
    async with opened(rig) as first, consuming(first, rig.endpoint(), 10, ack=False) as got:
        await until(lambda: len(got) == 10)
        for received in got[:5]:
            await received.ack()
        if rig.checks_unsettled:
            await until(lambda: _unsettled_is(rig, 5))
        unacked = set(numbers(got[5:]))
        ids = {n: _event(rig, r).id for n, r in zip(numbers(got), got, strict=True)}
        await rig.proxy.cut()
    async with opened(rig) as second, consuming(second, rig.endpoint(), 10, ack=True) as again:
        await until(lambda: unacked <= set(numbers(again)))
        if rig.kind in ("kafka", "nats", "redis"):
            # Acknowledged before the cut: never delivered again. And the ids derive from
            # the broker's position, so the redelivered message is the same event.
            assert sorted(numbers(again)) == sorted(unacked)
            assert {n: _event(rig, r).id for n, r in zip(numbers(again), again, strict=True)} \
                == {n: ids[n] for n in unacked}
    assert rig.proxy.cuts == 1


async def _unsettled_is(rig: Rig, count: int) -> bool:
    if rig.kind == "amqp":
        return True  # RabbitMQ counts unacknowledged messages only in its management API
    return await rig.unsettled() == count


def _event(rig: Rig, received: Received) -> Event:
    return binding.to_event(rig.kind, received.message, "test.plain", "/test")


TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SAMPLE = Event(
    type="order.created", id="ev-42", source="/shop/orders", subject="order-7",
    time=datetime(2026, 12, 7, 21, 0, tzinfo=UTC), data={"total": 12.5, "items": ["a", "b"]},
    extensions={"traceparent": TRACE, "tenant": "acme"},
)


def _same(found: Event, expected: Event) -> None:
    assert (found.id, found.type, found.source, found.subject, found.time, found.data) == (
        expected.id, expected.type, expected.source, expected.subject, expected.time,
        expected.data)
    for name, value in expected.extensions.items():
        assert found.extensions[name] == value


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
async def test_cloudevents_from_fnrun_read_by_the_brokers_own_client(
    rig: Rig, structured: bool
) -> None:
    async with opened(rig) as broker:
        await broker.publish(rig.endpoint(), binding.to_message(rig.kind, SAMPLE, structured))
    [raw] = await rig.native_read(1)
    if structured:
        assert raw.content_type == "application/cloudevents+json"
        assert json.loads(raw.body)["id"] == SAMPLE.id
    else:
        prefix = PREFIX[rig.kind]
        assert raw.headers[prefix + "id"] == SAMPLE.id
        assert raw.headers[prefix + "type"] == SAMPLE.type
        assert raw.headers[prefix + "traceparent"] == SAMPLE.extensions["traceparent"]
        assert json.loads(raw.body) == SAMPLE.data
    _same(binding.to_event(rig.kind, raw, "unused.type", "/unused"), SAMPLE)


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
async def test_cloudevents_from_the_brokers_own_client_read_by_fnrun(
    rig: Rig, structured: bool
) -> None:
    if structured:
        envelope = {"specversion": "1.0", "id": "ev-42", "type": "order.created",
                    "source": "/shop/orders", "subject": "order-7",
                    "time": "2026-12-07T21:00:00Z", "traceparent": TRACE,
                    "tenant": "acme", "data": SAMPLE.data}
        await rig.native_publish(json.dumps(envelope).encode(), {},
                                 "application/cloudevents+json")
    else:
        prefix = PREFIX[rig.kind]
        headers = {"specversion": "1.0", "id": "ev-42", "type": "order.created",
                   "source": "/shop/orders", "subject": "order-7",
                   "time": "2026-12-07T21:00:00Z", "traceparent": TRACE,
                   "tenant": "acme"}
        await rig.native_publish(json.dumps(SAMPLE.data).encode(),
                                 {prefix + k: v for k, v in headers.items()}, "application/json")
    async with opened(rig) as broker, consuming(broker, rig.endpoint(), 10, ack=True) as got:
        await until(lambda: len(got) == 1)
        event = binding.to_event(rig.kind, got[0].message, "unused.type", "/unused")
    _same(event, SAMPLE)
    if rig.kind == "kafka":
        assert event.extensions["partitionkey"] == "k1"  # the key the rig's producer sets


async def test_a_plain_message_is_an_event_of_the_source_type_with_broker_metadata(
    rig: Rig,
) -> None:
    await rig.native_publish(b'{"temp": 21.5}', {"origin": "sensor-3"}, None)
    async with opened(rig) as broker, consuming(broker, rig.endpoint(), 10, ack=True) as got:
        await until(lambda: len(got) == 1)
    event = binding.to_event(rig.kind, got[0].message, "sensor.reading", "/sensors")
    assert (event.type, event.source, event.data) == ("sensor.reading", "/sensors",
                                                     {"temp": 21.5})
    assert event.extensions["headers"]["origin"] == "sensor-3"
    where = {"amqp": "queue", "kafka": "partition", "nats": "sequence", "mqtt": "topic",
             "redis": "entryid"}[rig.kind]
    assert where in event.extensions
    if rig.kind in ("kafka", "nats", "redis"):
        assert event.id.startswith(f"{rig.kind}:")


@pytest.mark.parametrize("rig", ["rabbitmq", "nats"], indirect=True)  # the others take any name
async def test_publishing_where_the_broker_has_nowhere_to_put_it_is_an_error(rig: Rig) -> None:
    nowhere = Endpoint(queue=f"{rig.name}-missing", subject=f"{rig.name}-nowhere.x")
    async with opened(rig) as broker:
        with pytest.raises(BrokerError):
            await broker.publish(nowhere, Message(b"{}"))


@pytest.mark.parametrize("rig", ["rabbitmq", "nats"], indirect=True)
async def test_in_a_batch_only_the_messages_with_nowhere_to_go_fail(rig: Rig) -> None:
    nowhere = Endpoint(queue=f"{rig.name}-missing", subject=f"{rig.name}-nowhere.x")
    batch = [(nowhere if i % 3 == 1 else rig.endpoint(), Message(body_of(i)))
             for i in range(30)]
    settled: dict[int, BrokerError | None] = {}

    def settle(index: int, error: BrokerError | None) -> None:
        assert index not in settled, f"message {index} settled twice"
        settled[index] = error

    async with opened(rig) as broker:
        await broker.publish_many(batch, settle)
        failed = sorted(i for i, error in settled.items() if error is not None)
        assert failed == [i for i in range(30) if i % 3 == 1]
        assert not any(isinstance(settled[i], BrokerUnavailable) for i in failed)
        async with consuming(broker, rig.endpoint(), prefetch=50, ack=True) as got:
            await until(lambda: len(got) >= 20)
            with anyio.move_on_after(0.5):
                await until(lambda: len(got) > 20)
        assert sorted(numbers(got)) == [i for i in range(30) if i % 3 != 1]


@pytest.mark.parametrize("rig", ["nats"], indirect=True)
async def test_a_sinks_batch_has_one_outcome_per_event_in_order(rig: Rig) -> None:
    """A sink publishes its batch at once; an event with nowhere to go (no stream takes its
    subject) fails only its own attempt, and the events around it are confirmed."""
    where = Where(Path("fnrun.yaml"), 1, 1)
    link = Link(BrokerSpec("b", where, url=rig.url))
    sink = SinkPublisher(SinkSpec("out", where, broker="b", events="**", subject="{subject}"),
                         lambda: link, SystemClock())
    subjects = [f"{rig.name}.in" if i % 4 else "nowhere.x" for i in range(40)]
    events = [Event(type="t", subject=s, data={"n": i}) for i, s in enumerate(subjects)]
    async with anyio.create_task_group() as group:
        group.start_soon(link.run)
        outcomes = await sink.invoke_many([(event, 1) for event in events])
        group.cancel_scope.cancel()
    assert [o.status for o in outcomes] == ["ok" if i % 4 else "error" for i in range(40)]
    assert all("NATS did not take" in (o.error or "") for o in outcomes[::4])
    found = await rig.native_read(30)
    assert sorted(json.loads(m.body)["n"] for m in found) == [i for i in range(40) if i % 4]
    assert {m.headers["ce-id"] for m in found} == {e.id for i, e in enumerate(events) if i % 4}


async def test_a_cut_connection_ends_consuming_with_broker_unavailable_or_heals(rig: Rig) -> None:
    """RabbitMQ, NATS, MQTT and Redis: consume ends with `BrokerUnavailable` (the caller
    reconnects). Kafka: aiokafka reconnects by itself, and consuming goes on."""
    await rig.native_publish(body_of(0), {}, "application/json")
    got: list[Received] = []
    acked: list[Received] = []
    ended: list[BaseException] = []

    async def run(broker: Broker) -> None:
        try:
            async with aclosing(broker.consume(rig.endpoint(), 10)) as messages:
                async for received in messages:
                    got.append(received)
                    await received.ack()
                    acked.append(received)
        except BrokerUnavailable as exc:
            ended.append(exc)

    async with opened(rig) as broker, anyio.create_task_group() as group:
        group.start_soon(run, broker)
        await until(lambda: len(got) == 1)
        await rig.proxy.cut()
        if rig.kind != "kafka":
            await until(lambda: bool(ended))
            assert "\n" not in str(ended[0])
        if rig.kind in ("amqp", "nats", "mqtt"):  # redis-py's pool opens a new connection
            with pytest.raises(BrokerUnavailable):
                await broker.publish(rig.endpoint(), Message(b"{}"))
        if rig.kind == "kafka":
            await rig.native_publish(body_of(1), {}, "application/json")
            # Wait for the second ack's commit too: cancelling it midway leaves aiokafka's
            # shielded commit task to fail on the cut connection with nobody to read it.
            await until(lambda: len(acked) == 2 or bool(ended))
            assert not ended
        group.cancel_scope.cancel()


@pytest.mark.parametrize("rig", ["rabbitmq", "nats", "mqtt"], indirect=True)
async def test_an_ack_on_a_lost_connection_is_broker_unavailable_and_the_message_returns(
    rig: Rig,
) -> None:
    await rig.native_publish(body_of(7), {}, "application/json")
    async with opened(rig) as first, aclosing(first.consume(rig.endpoint(), 10)) as messages:
        held = await anext(messages)
        await rig.proxy.cut()
        with pytest.raises(BrokerUnavailable):
            with anyio.fail_after(20):
                async for _ in messages:  # ends once the client sees the loss
                    pass
        with pytest.raises(BrokerUnavailable, match="acknowledge"):
            await held.ack()
        await held.ack()  # settled already: a second call does nothing
    async with opened(rig) as second, consuming(second, rig.endpoint(), 10, ack=True) as again:
        await until(lambda: numbers(again) == [7])
