"""Redis: due retries move to a stream of their own, `r:{fn}`, which claims read first.

At the tail of the function's stream `q:{fn}` a due retry waited behind the
whole backlog (issue 17 point 12). Every path that touches a running
delivery (settle, release, takeover of a dead node's or a lease-expired
delivery, counts, next_due) must handle entries of either stream.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager

import anyio
import pytest
import redis

from runtime.events import Event, Outcome
from runtime.store.base import Counts
from runtime.store.redis import RedisStore
from tests.e2e.harness import RedisServer
from tests.runtime.store.nodes import redis_nodes

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(60)]


def ok() -> Outcome:
    return Outcome(status="ok", started=time.time(), duration=0.001)


def failed() -> Outcome:
    return Outcome(status="error", started=time.time(), duration=0.001, error="boom")


def nodes(server: RedisServer, count: int) -> AbstractAsyncContextManager[list[RedisStore]]:
    return redis_nodes(server.url, count)


async def a_retry_behind_a_backlog(store: RedisStore, backlog: int = 5) -> None:
    """"flaky" failed once and is due again; `backlog` fresh events wait ahead of it."""
    await store.publish([(Event(type="x", id="flaky"), ["f"])])
    [first] = await store.claim("f", 1, time.time())
    await store.publish([(Event(type="x", id=f"b{n}"), ["f"]) for n in range(backlog)])
    await store.fail(first, failed(), time.time())


async def test_retries_and_fresh_deliveries_settle_together_and_count_right(
    own_redis: RedisServer,
) -> None:
    async with nodes(own_redis, 1) as (store,):
        await a_retry_behind_a_backlog(store)
        assert (await store.counts())["f"] == Counts(pending=6)
        claimed = await store.claim("f", 3, time.time())
        assert [(d.event.id, d.attempt) for d in claimed] == [("flaky", 2), ("b0", 1), ("b1", 1)]
        assert (await store.counts())["f"] == Counts(pending=3, running=3)
        await store.succeed_many([(d, ok(), []) for d in claimed])
        assert (await store.counts())["f"] == Counts(pending=3)
        rest = await store.claim("f", 10, time.time())
        assert [d.event.id for d in rest] == ["b2", "b3", "b4"]
        await store.succeed_many([(d, ok(), []) for d in rest])
        assert (await store.counts())["f"] == Counts()
        history = await store.history("f", limit=10)
        assert sorted((h.event_id, h.attempt) for h in history)[:2] == [("b0", 1), ("b1", 1)]


async def test_a_released_retry_stays_first_and_keeps_its_attempt(
    own_redis: RedisServer,
) -> None:
    async with nodes(own_redis, 1) as (store,):
        await a_retry_behind_a_backlog(store)
        [retry] = await store.claim("f", 1, time.time())
        assert (retry.event.id, retry.attempt) == ("flaky", 2)
        await store.release([retry])
        assert (await store.counts())["f"] == Counts(pending=6)
        due = await store.next_due("f")
        assert due is not None and due <= time.time()
        [again] = await store.claim("f", 1, time.time())
        assert (again.id, again.event.id, again.attempt) == (retry.id, "flaky", 2)
        await store.fail(again, failed(), None)  # and it can be dead-lettered from there
        [letter] = await store.dead_letters("f")
        assert (letter.event.id, letter.attempts) == ("flaky", 2)


async def test_a_dead_nodes_retry_is_taken_over_with_its_attempt_counted(
    own_redis: RedisServer,
) -> None:
    async with nodes(own_redis, 2) as (a, b):
        a.heartbeat_ttl = 0.3
        await a_retry_behind_a_backlog(a, backlog=0)
        [held] = await a.claim("f", 1, time.time())
        assert held.attempt == 2
        assert a._beat is not None
        a._beat.cancel()  # a dies: its heartbeat key expires
        with redis.Redis.from_url(own_redis.url) as client:
            client.delete(f"fnrun:node:{a.consumer}")
        with anyio.fail_after(10):
            while not (taken := await b.claim("f", 10, time.time())):
                await b.wait_for_work("f", 0.05)
        assert [(d.id, d.event.id, d.attempt) for d in taken] == [(held.id, "flaky", 3)]
        await b.succeed(taken[0], ok(), [])
        assert (await b.counts())["f"] == Counts()


async def test_a_lease_expired_retry_is_taken_over(own_redis: RedisServer) -> None:
    async with nodes(own_redis, 2) as (a, b):
        b.configure({"f": 0.2})  # lease 0.2 s + 1 s margin
        await a_retry_behind_a_backlog(a, backlog=0)
        [held] = await a.claim("f", 1, time.time())
        with anyio.fail_after(10):
            while not (taken := await b.claim("f", 10, time.time())):
                await b.wait_for_work("f", 0.05)
        assert [(d.id, d.attempt) for d in taken] == [(held.id, 3)]
        await a.succeed(held, ok(), [])  # the late first owner settles nothing
        assert (await b.counts())["f"].running == 1
        await b.succeed(taken[0], ok(), [])
        assert (await b.counts())["f"] == Counts()
