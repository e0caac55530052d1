"""Kafka and Redis Streams specifics: Kafka commits only acknowledged prefixes, and a Redis
consumer claims what another consumer held for longer than `ack_wait`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.runtime.brokers.conftest import Missing, make_rig
from tests.runtime.brokers.rigs import KafkaRig, RedisRig, Rig, body_of
from tests.runtime.brokers.test_adapters import consuming, numbers, opened, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def kafka(tmp_path: Path, service_missing: Missing) -> AsyncIterator[Rig]:
    rig = make_rig("kafka", tmp_path, service_missing)
    await rig.setup()
    try:
        yield rig
    finally:
        await rig.teardown()


@pytest.fixture
async def redis_rig(tmp_path: Path, service_missing: Missing) -> AsyncIterator[Rig]:
    rig = make_rig("redis", tmp_path, service_missing)
    await rig.setup()
    try:
        yield rig
    finally:
        await rig.teardown()


async def test_kafka_commits_nothing_past_an_unacknowledged_offset(kafka: KafkaRig) -> None:
    for i in range(10):  # one key, so one partition, in this order
        await kafka.native_publish(body_of(i), {}, "application/json")
    async with opened(kafka) as first, consuming(first, kafka.endpoint(), 10, ack=False) as got:
        await until(lambda: len(got) == 10)
        assert numbers(got) == list(range(10))
        for received in got[5:]:
            await received.ack()
        assert await kafka.unsettled() == 10  # 0..4 are out: offset 0 stays the commit point
        await got[0].ack()
        await until(lambda: _unsettled(kafka, 9))
    async with opened(kafka) as second, consuming(second, kafka.endpoint(), 10, ack=True) as again:
        await until(lambda: len(again) >= 9)
        assert numbers(again) == list(range(1, 10))  # acknowledged, but after an unacknowledged one


async def _unsettled(rig: Rig, count: int) -> bool:
    return await rig.unsettled() == count


async def test_redis_claims_what_another_consumer_held_past_ack_wait(redis_rig: RedisRig) -> None:
    for i in range(3):
        await redis_rig.native_publish(body_of(i), {}, "application/json")
    gone = redis_rig.endpoint(consumer="gone", ack_wait=1.0)
    async with opened(redis_rig) as first, consuming(first, gone, 10, ack=False) as got:
        await until(lambda: len(got) == 3)  # read, never acknowledged: its consumer dies
    taker = redis_rig.endpoint(consumer="taker", ack_wait=1.0)
    async with opened(redis_rig) as second, consuming(second, taker, 10, ack=True) as again:
        await until(lambda: sorted(numbers(again)) == [0, 1, 2])
        await until(lambda: _unsettled(redis_rig, 0))
        assert {r.message.position for r in again} == {r.message.position for r in got}
