"""While Redis is down or hung, a publish gives up within seconds; claims wait it out.

A webhook sender waits seconds, not a minute, for its answer: the publish
behind a webhook or `POST /_/events` must fail (503) before the sender gives
up. Claims and outcome writes have no one waiting on them and must ride out a
Redis restart. Runs on a private redis-server (killed and restarted), DB 9.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import anyio
import pytest
import redis

from runtime.errors import StoreUnavailable
from runtime.events import Event
from runtime.store.base import Delivery
from runtime.store.redis import RedisStore
from tests.e2e.harness import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(120)]

PUBLISH_BOUND = 20.0
"""Seconds a publish may take to give up: well above the budget on a loaded
2-core machine, well below the patient budget (about 40 s of reconnects)."""


@pytest.fixture
def url(own_redis: RedisServer) -> Iterator[str]:
    """DB 9 of the private server, flushed afterwards if it is up."""
    yield f"redis://127.0.0.1:{own_redis.port}/9"
    try:
        with redis.Redis(port=own_redis.port, db=9, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError:
        pass  # killed by the test: the fixture's server goes with its folder


async def test_a_publish_gives_up_within_seconds_and_a_claim_rides_out_the_restart(
    own_redis: RedisServer, url: str
) -> None:
    store = RedisStore(url)
    await store.open()
    try:
        await store.publish([(Event(type="x", id="e1"), ["f"])])
        own_redis.kill()
        claimed: list[Delivery] = []

        async def claim() -> None:
            claimed.extend(await store.claim("f", 10, time.time()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(claim)  # started while Redis is down: it keeps reconnecting
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="^redis: publish: .*111"):
                await store.publish([(Event(type="x", id="e2"), ["f"])])
            gave_up = time.monotonic() - started
            own_redis.start()  # same AOF: what was acknowledged is back
        with anyio.fail_after(20):
            assert await store.publish([(Event(type="x", id="e3"), ["f"])]) == [True]
    finally:
        await store.close()
    assert gave_up < PUBLISH_BOUND
    # The claim was still trying when Redis came back, and got what was stored before.
    assert [d.event.id for d in claimed] == ["e1"]


async def test_a_publish_to_a_hung_redis_gives_up_within_seconds_then_works_again(
    own_redis: RedisServer, url: str
) -> None:
    # A server that accepts connections and never answers (stopped, swapping, a
    # half-open link): a read with no timeout waited forever, and one retried
    # on each timeout took PUBLISH_RETRIES times the timeout.
    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    store = RedisStore(url)
    await store.open()
    try:
        await store.publish([(Event(type="x", id="e1"), ["f"])])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with anyio.fail_after(90), pytest.raises(StoreUnavailable, match="^redis: publish: "):
                await store.publish([(Event(type="x", id="e2"), ["f"])])
            gave_up = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        with anyio.fail_after(20):
            assert await store.publish([(Event(type="x", id="e3"), ["f"])]) == [True]
            claimed = {d.event.id for d in await store.claim("f", 10, time.time())}
    finally:
        await store.close()
    assert gave_up < PUBLISH_BOUND
    # e2 may be stored too: the stopped server still had it in its socket (a 503
    # says "try again", and the same id stores nothing twice).
    assert {"e1", "e3"} <= claimed <= {"e1", "e2", "e3"}
