"""RabbitMQ specifics: a source's queue declared when missing and bound to an exchange."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from runtime.brokers.base import BrokerError, Endpoint, Message
from tests.runtime.brokers.rigs import RabbitRig, listening
from tests.runtime.brokers.test_adapters import consuming, opened, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
DIRECT = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def rabbit(service_missing: object) -> AsyncIterator[RabbitRig]:
    if not listening(5672):
        service_missing("RabbitMQ is not running on 127.0.0.1:5672")  # type: ignore[operator]
    rig = RabbitRig()
    await rig.proxy.start()
    try:
        yield rig
    finally:
        await rig.proxy.close()


async def test_a_missing_queue_is_declared_and_bound_to_the_exchange(rabbit: RabbitRig) -> None:
    queue = f"fnrun-test-{uuid.uuid4().hex[:10]}"
    routed = Endpoint(queue=queue, exchange="amq.topic", routing_key=f"{queue}.*")
    try:
        async with opened(rabbit) as broker, consuming(broker, routed, 10, ack=True) as got:
            await until(lambda: _bound(queue))
            for i in range(3):
                await broker.publish(Endpoint(exchange="amq.topic", routing_key=f"{queue}.x"),
                                     Message(json.dumps({"n": i}).encode()))
            with pytest.raises(BrokerError, match="did not take"):  # no queue binds this key
                await broker.publish(Endpoint(exchange="amq.topic", routing_key="nobody.here"),
                                     Message(b"{}"))
            await until(lambda: len(got) == 3)
        assert [r.message.metadata["routingkey"] for r in got] == [f"{queue}.x"] * 3
        assert {r.message.metadata["exchange"] for r in got} == {"amq.topic"}
    finally:
        connection = await aio_pika.connect(DIRECT)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)


async def _bound(queue: str) -> bool:
    connection = await aio_pika.connect(DIRECT)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        return bool(declared.declaration_result.consumer_count)
