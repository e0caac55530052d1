"""MQTT 3.1.1 (`?version=3.1.1`): the session keeps what was not PUBACKed, and CloudEvents
travel in structured mode, the only one 3.1.1 has."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.brokers import binding
from runtime.brokers.base import open_broker
from runtime.events import Event
from tests.runtime.brokers.conftest import Missing, make_rig
from tests.runtime.brokers.rigs import MqttRig, body_of
from tests.runtime.brokers.test_adapters import consuming, numbers, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def mqtt(tmp_path: Path, service_missing: Missing) -> AsyncIterator[MqttRig]:
    rig = make_rig("mqtt", tmp_path, service_missing)
    assert isinstance(rig, MqttRig)
    await rig.setup()
    try:
        yield rig
    finally:
        await rig.teardown()


async def test_mqtt_3_1_1_redelivers_what_was_not_acknowledged(mqtt: MqttRig) -> None:
    for i in range(4):
        await mqtt.native_publish(body_of(i), {}, None)
    first = open_broker(mqtt.url + "?version=3.1.1")
    assert first.binding == "mqtt3"
    await first.connect()
    async with consuming(first, mqtt.endpoint(), 10, ack=False) as got:
        await until(lambda: len(got) == 4)
        for received in got[:2]:
            await received.ack()
        unacked = set(numbers(got[2:]))
        await mqtt.proxy.cut()
    await first.close()
    second = open_broker(mqtt.url + "?version=3.1.1")
    await second.connect()
    try:
        async with consuming(second, mqtt.endpoint(), 10, ack=True) as again:
            await until(lambda: unacked <= set(numbers(again)))
    finally:
        await second.close()


async def test_mqtt_3_1_1_carries_cloudevents_in_structured_mode(mqtt: MqttRig) -> None:
    event = Event(type="sensor.temp", id="t-1", source="/sensors/3", data={"c": 21.5},
                  extensions={"site": "north"})
    broker = open_broker(mqtt.url + "?version=3.1.1")
    await broker.connect()
    try:
        await broker.publish(mqtt.endpoint(), binding.to_message("mqtt3", event, False))
        async with consuming(broker, mqtt.endpoint(), 10, ack=True) as got:
            await until(lambda: len(got) == 1)
    finally:
        await broker.close()
    message = got[0].message
    assert message.content_type is None  # 3.1.1 has no properties: the body says it all
    assert json.loads(message.body)["specversion"] == "1.0"
    back = binding.to_event("mqtt3", message, "unused.type", "/unused")
    assert (back.id, back.type, back.source, back.data, back.extensions["site"]) == (
        "t-1", "sensor.temp", "/sensors/3", {"c": 21.5}, "north")


async def test_a_batch_is_published_within_the_brokers_receive_maximum(mqtt: MqttRig) -> None:
    """The machine's Mosquitto announces Receive Maximum 20 (its max_inflight_messages
    default): a batch of 150 at once keeps 20 in flight, and all 150 are confirmed and
    arrive with their attributes (a client over its quota is disconnected)."""
    broker = open_broker(mqtt.url)
    await broker.connect()
    try:
        publisher = broker._publisher  # type: ignore[attr-defined]
        assert publisher._client._max_inflight_messages == 20
        messages = [(mqtt.endpoint(), binding.to_message(
            "mqtt", Event(type="t.out", id=f"e{i}", data={"n": i}))) for i in range(150)]
        settled: dict[int, object] = {}
        await broker.publish_many(messages, lambda index, error: settled.update({index: error}))
        assert settled == {i: None for i in range(150)}
    finally:
        await broker.close()
    got = await mqtt.native_read(150)
    assert sorted(m.headers["id"] for m in got) == sorted(f"e{i}" for i in range(150))
    assert {m.content_type for m in got} == {"application/json"}
    assert sorted(json.loads(m.body)["n"] for m in got) == list(range(150))
