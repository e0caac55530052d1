"""A source against a real RabbitMQ and a real Redis store that goes away (SPEC 10):
nothing is acknowledged while the store refuses writes, fetching stops at `prefetch`,
and once the store is back every message is stored and acknowledged. A client's own
unexpected error costs the connection, not the source: it consumes again on a new one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import NoReturn

import anyio
import pytest

from runtime.brokers import rabbitmq
from runtime.brokers.base import Endpoint, Received
from runtime.brokers.links import Link
from runtime.brokers.sources import Source
from runtime.brokers.specs import BrokerSpec, SourceSpec
from runtime.errors import Where
from runtime.events import Event
from runtime.store.redis import RedisStore
from tests.e2e.harness import RedisServer
from tests.runtime.brokers.conftest import make_rig
from tests.runtime.brokers.rigs import RabbitRig, body_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

HERE = Where(Path("fnrun.yaml"), 1, 1)
N, PREFETCH = 60, 10


class Ingress:
    """The durable door, as the supervisor's: publish to the store, one delivery each."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.refused = 0
        self.numbers: set[int] = set()
        """The messages' `n` of every event stored."""
        self.batches: list[int] = []
        """How many events each publish stored."""

    async def publish(self, events: Sequence[Event]) -> list[bool]:
        try:
            fresh = await self.store.publish([(e, ["f"]) for e in events])
        except Exception:
            self.refused += 1
            raise
        self.batches.append(len(events))
        self.numbers.update(json.loads(e.data)["n"] if isinstance(e.data, str) else e.data["n"]
                            for e in events)
        return fresh


async def until(check: Callable[[], object], within: float = 20) -> None:
    with anyio.fail_after(within):
        while not await _value(check):
            await anyio.sleep(0.05)


async def _value(check: Callable[[], object]) -> object:
    result = check()
    if hasattr(result, "__await__"):
        return await result  # type: ignore[misc]
    return result


@pytest.mark.slow  # ~6 s: the Redis store tries to reconnect for ~4 s before it refuses
async def test_a_source_pauses_while_the_store_refuses_writes(
    tmp_path: Path, own_redis: RedisServer, service_missing: Callable[[str], NoReturn]
) -> None:
    rig = make_rig("rabbitmq", tmp_path, service_missing)
    assert isinstance(rig, RabbitRig)
    await rig.setup()
    store = RedisStore(own_redis.url)
    await store.open()
    try:
        ingress = Ingress(store)
        link = Link(BrokerSpec("b", HERE, url=rig.url, kind="amqp"))
        spec = SourceSpec("s", HERE, broker="b", type="t.in", prefetch=PREFETCH, queue=rig.name)
        source = Source(spec, link, ingress, "node")
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.run)
            tg.start_soon(source.run)
            for i in range(N // 2):
                await rig.native_publish(body_of(i), {}, "application/json")
            await until(lambda: source.messages == N // 2)
            own_redis.kill()
            for i in range(N // 2, N):
                await rig.native_publish(body_of(i), {}, "application/json")
            await until(lambda: source.status.state == "paused")
            # Held, not acknowledged: at most `prefetch` left the queue, none was settled.
            await until(lambda: ingress.refused >= 1)
            assert source.messages == N // 2
            assert await rig.unsettled() >= N // 2 - PREFETCH
            own_redis.start()
            await until(lambda: source.messages == N, within=30)
            assert source.status.state == "running"
            await until(lambda: _zero(rig))
            tg.cancel_scope.cancel()
        counts = await store.counts()
        assert counts["f"].pending == N
    finally:
        await store.close()
        await rig.teardown()


async def _zero(rig: RabbitRig) -> bool:
    return await rig.unsettled() == 0


async def test_a_clients_unexpected_error_reconnects_and_every_message_is_imported(
    tmp_path: Path, own_redis: RedisServer, service_missing: Callable[[str], NoReturn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bare `RuntimeError` out of a real RabbitMQ adapter's consume, after a third of the
    messages, leaves that adapter failing for good (as aio-pika's "Connection ... closed" did
    after a cut, 8122236): the source must drop the connection, not retry on it."""
    rig = make_rig("rabbitmq", tmp_path, service_missing)
    assert isinstance(rig, RabbitRig)
    real = rabbitmq.RabbitMQ.consume
    broken: list[rabbitmq.RabbitMQ] = []
    opened: list[rabbitmq.RabbitMQ] = []

    async def consume(self: rabbitmq.RabbitMQ, endpoint: Endpoint, prefetch: int
                      ) -> AsyncIterator[Received]:
        opened.append(self)
        if self in broken:
            raise RuntimeError("Connection to amqp://guest:******@127.0.0.1/ closed")
        async with aclosing(real(self, endpoint, prefetch)) as messages:
            async for handed, received in aenumerate(messages):
                if handed == N // 3 and not broken:
                    broken.append(self)
                    raise RuntimeError("the client failed (not a BrokerError)")
                yield received

    monkeypatch.setattr(rabbitmq.RabbitMQ, "consume", consume)
    await rig.setup()
    store = RedisStore(own_redis.url)
    await store.open()
    try:
        ingress = Ingress(store)
        link = Link(BrokerSpec("b", HERE, url=rig.url, kind="amqp"))
        spec = SourceSpec("s", HERE, broker="b", type="t.in", prefetch=PREFETCH, queue=rig.name)
        source = Source(spec, link, ingress, "node")
        for i in range(N):
            await rig.native_publish(body_of(i), {}, "application/json")
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.run)
            tg.start_soon(source.run)
            await until(lambda: len(ingress.numbers) == N, within=30)
            await until(lambda: _zero(rig))
            tg.cancel_scope.cancel()
        assert ingress.numbers == set(range(N))
        assert len(broken) == 1
        assert len({id(adapter) for adapter in opened}) >= 2  # consumed on a new connection
    finally:
        await store.close()
        await rig.teardown()


async def test_a_backlog_is_imported_in_batches_of_half_the_window(
    tmp_path: Path, own_redis: RedisServer, service_missing: Callable[[str], NoReturn],
) -> None:
    """The importer takes what the puller hands over in a row, up to half of `prefetch`
    (the other half is fetched meanwhile), not the few messages buffered at one instant."""
    rig = make_rig("redis", tmp_path, service_missing)
    await rig.setup()
    store = RedisStore(own_redis.url)
    await store.open()
    backlog, prefetch = 300, 40
    try:
        for i in range(backlog):
            await rig.native_publish(body_of(i), {}, "application/json")
        ingress = Ingress(store)
        link = Link(BrokerSpec("b", HERE, url=rig.url, kind="redis"))
        spec = SourceSpec("s", HERE, broker="b", type="t.in", prefetch=prefetch,
                          stream=rig.name, group="source")
        source = Source(spec, link, ingress, "node")
        async with anyio.create_task_group() as tg:
            tg.start_soon(link.run)
            tg.start_soon(source.run)
            await until(lambda: source.messages == backlog)
            tg.cancel_scope.cancel()
        assert ingress.numbers == set(range(backlog))
        assert sum(ingress.batches) == backlog
        assert max(ingress.batches) == prefetch // 2
        assert sum(ingress.batches) / len(ingress.batches) >= prefetch // 4, ingress.batches
        assert await rig.unsettled() == 0
    finally:
        await store.close()
        await rig.teardown()


async def aenumerate(items: AsyncIterator[Received]) -> AsyncIterator[tuple[int, Received]]:
    index = 0
    async for item in items:
        yield index, item
        index += 1
