"""Redis-only facts: several nodes on one Redis, leases, heartbeats, group commit.

The shared contract suite (test_contract.py) covers the delivery model on
DB 15; these tests use DB 14 and flush only it.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import NoReturn

import anyio
import pytest
import redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from runtime.errors import StoreError, StoreUnavailable
from runtime.events import Event, Outcome
from runtime.store.base import Counts, Delivery
from runtime.store.redis import RedisStore
from tests.e2e.harness import RedisServer
from tests.runtime.store.nodes import redis_nodes
from tests.services import redis_url

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(60)]

URL = redis_url(14)


@pytest.fixture(autouse=True)
def clean_db(service_missing: Callable[[str], NoReturn]) -> object:
    """Flush DB 14 (only) around each test; skip (or fail under CI) without Redis."""
    try:
        with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {URL}: {exc}")
    yield None
    with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
        client.flushdb()


@contextmanager
def closed_port() -> Iterator[int]:
    """A local TCP port bound but not listening, so connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def nodes(count: int) -> AbstractAsyncContextManager[list[RedisStore]]:
    """`count` opened stores on DB 14, as separate cluster nodes."""
    return redis_nodes(URL, count)


def ok() -> Outcome:
    return Outcome(status="ok", started=time.time(), duration=0.001)


def crashed() -> Outcome:
    return Outcome(status="crash", started=time.time(), duration=0.001, error="worker died")


async def claim_within(store: RedisStore, function: str, seconds: float) -> list[Delivery]:
    """Claim until something comes, polling with a deadline (never a bare sleep)."""
    with anyio.fail_after(seconds):
        while True:
            claimed = await store.claim(function, 10, time.time())
            if claimed:
                return claimed
            await store.wait_for_work(function, 0.05)


async def test_lease_takeover_counts_the_attempt_and_ignores_the_late_owner() -> None:
    async with nodes(2) as (a, b):
        b.configure({"f": 0.2})  # lease 0.2 s + 1 s margin
        await a.publish([(Event(type="x", id="e1"), ["f"])])
        [held] = await a.claim("f", 10, time.time())
        assert await b.claim("f", 10, time.time()) == []
        started = time.monotonic()
        [taken] = await claim_within(b, "f", 10)
        assert time.monotonic() - started >= 0.8
        assert (taken.id, taken.event.id, taken.attempt) == (held.id, "e1", 2)
        # The slow first owner finishes late: its emits must not commit,
        # only the current owner's success settles the delivery.
        await a.succeed(held, ok(), [(Event(type="late"), ["g"])])
        assert (await b.counts())["f"].running == 1
        await b.succeed(taken, ok(), [(Event(type="won"), ["g"])])
        [emitted] = await b.claim("g", 10, time.time())
        assert emitted.event.type == "won"
        assert (await b.counts())["f"] == Counts()


async def test_a_dead_nodes_work_is_taken_over_once_its_heartbeat_expires() -> None:
    async with nodes(1) as (b,):
        a = RedisStore(URL)
        a.heartbeat_ttl = 0.5
        await a.open()
        await a.publish([(Event(type="x", id="e1"), ["f"])])
        [held] = await a.claim("f", 10, time.time())
        # kill -9: no goodbye, the heartbeat key just stops being refreshed.
        assert a._beat is not None
        a._beat.cancel()
        await a.client.aclose()
        assert a._publisher is not None  # publishes have a client of their own
        await a._publisher.client.aclose()
        [taken] = await claim_within(b, "f", 10)  # default lease is 60 s: heartbeat wins
        assert (taken.id, taken.attempt) == (held.id, 2)


async def test_attempt_counts_survive_reconnects() -> None:
    async with nodes(1) as (first,):
        await first.publish([(Event(type="x", id="e1"), ["f"])])
        [one] = await first.claim("f", 10, time.time())
        assert one.attempt == 1
    # A new process (new consumer) after the old one went away mid-attempt.
    async with nodes(1) as (second,):
        assert await second.recover() == 1
        [two] = await second.claim("f", 10, time.time())
        assert (two.id, two.attempt) == (one.id, 2)
        await second.fail(two, crashed(), time.time())
    async with nodes(1) as (third,):
        [three] = await third.claim("f", 10, time.time())
        assert (three.id, three.attempt) == (one.id, 3)
        await third.fail(three, crashed(), None)
        [letter] = await third.dead_letters()
        assert (letter.id, letter.attempts, letter.error) == (one.id, 3, "worker died")


async def test_three_nodes_share_3000_deliveries_each_run_once() -> None:
    total = 3000
    seen: Counter[str] = Counter()
    per_node: Counter[int] = Counter()
    async with nodes(3) as stores:
        await stores[0].publish([(Event(type="x", id=f"e{i}"), ["f"]) for i in range(total)])

        async def work(index: int, store: RedisStore) -> None:
            while sum(seen.values()) < total:
                batch = await store.claim("f", 20, time.time())
                for delivery in batch:
                    seen[delivery.event.id] += 1
                    per_node[index] += 1
                async with anyio.create_task_group() as settles:
                    for delivery in batch:
                        settles.start_soon(store.succeed, delivery, ok(), [])
                if not batch:
                    await store.wait_for_work("f", 0.05)

        with anyio.fail_after(45):
            async with anyio.create_task_group() as tg:
                for index, store in enumerate(stores):
                    tg.start_soon(work, index, store)
        counts = (await stores[0].counts())["f"]
    assert len(seen) == total
    assert [event_id for event_id, n in seen.items() if n != 1] == []
    assert (counts.pending, counts.running) == (0, 0)
    assert len(per_node) == 3, per_node  # every node took part


async def test_each_tick_fires_once_across_racing_nodes() -> None:
    ticks = [1_700_000_000.0 + 60 * i for i in range(20)]
    async with nodes(3) as stores:
        wins: list[float] = []

        async def race(store: RedisStore, tick: float) -> None:
            event = Event(type="fnrun.schedule", id=f"tick-{tick}")
            if await store.fire_tick("job:0", tick, event, ["job"]):
                wins.append(tick)

        with anyio.fail_after(20):
            for tick in ticks:
                async with anyio.create_task_group() as tg:
                    for store in stores:
                        tg.start_soon(race, store, tick)
        assert sorted(wins) == ticks
        assert await stores[1].last_tick("job:0") == ticks[-1]
        assert not await stores[2].fire_tick(
            "job:0", ticks[3], Event(type="fnrun.schedule", id="late"), ["job"]
        )
        assert (await stores[0].counts())["job"].pending == len(ticks)


async def test_concurrent_writes_share_round_trips() -> None:
    async with nodes(1) as (store,):
        before = store.round_trips
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(store.publish, [(Event(type="x", id=f"e{i}"), ["f"])])
        assert store.round_trips - before <= 20
        assert (await store.counts())["f"].pending == 200


async def test_an_unreachable_redis_is_one_clear_store_error() -> None:
    with closed_port() as port:
        store = RedisStore(f"redis://127.0.0.1:{port}/14")
        with anyio.fail_after(10), pytest.raises(StoreError, match="cannot open Redis store"):
            await store.open()


async def test_redis_gone_past_the_reconnects_is_store_unavailable(
    own_redis: RedisServer,
) -> None:
    # What the supervisor's loops wait out and its webhooks answer 503 for,
    # on any call: scripts, pipelines and plain commands.
    store = RedisStore(own_redis.url)
    await store.open()
    try:
        # One reconnect instead of the forty (about 40 s) that ride out a restart;
        # a publish has its own few seconds (test_redis_publish_budget.py).
        store.client.set_retry(Retry(NoBackoff(), retries=1))
        await store.publish([(Event(type="x", id="e1"), ["f"])])
        own_redis.kill()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.publish([(Event(type="x", id="e2"), ["f"])]),
            lambda: store.claim("f", 10, time.time()),
            store.counts,
            store.history,
            lambda: store.recall("k"),
        ]
        for call in calls:
            with anyio.fail_after(10), pytest.raises(StoreUnavailable, match="^redis: .*111"):
                await call()
        own_redis.start()  # same AOF: what was acknowledged is back
        with anyio.fail_after(10):
            assert [d.event.id for d in await claim_within(store, "f", 10)] == ["e1"]
    finally:
        await store.close()


async def test_succeed_many_skips_what_another_node_took_over_and_its_emits() -> None:
    async with nodes(2) as (a, b):
        await a.publish([(Event(type="x", id=f"e{n}"), ["f"]) for n in range(1, 4)])
        first, middle, last = await a.claim("f", 10, time.time())
        # Hand the middle delivery to node b as a lease takeover would.
        with redis.Redis.from_url(URL) as client:
            client.xclaim("fnrun:q:f", "g", b.consumer, 0, [a._entries[middle.id]])
        await a.succeed_many([
            (first, ok(), [(Event(type="kept", id="k1"), ["g"])]),
            (middle, ok(), [(Event(type="late", id="k2"), ["g"])]),
            (last, ok(), [(Event(type="kept", id="k3"), ["g"])]),
        ])
        assert (await a.counts())["f"] == Counts(running=1)
        emitted = await a.claim("g", 10, time.time())
        assert sorted(d.event.id for d in emitted) == ["k1", "k3"]
        history = await a.history("f", limit=10)
        assert [h.event_id for h in history] == ["e3", "e2", "e1"]
        assert [h.event_id for h in await a.history(limit=3)] == ["e3", "e2", "e1"]


async def test_work_published_by_another_node_wakes_a_waiting_one_at_once() -> None:
    async with nodes(2) as (a, b):
        woke = anyio.Event()

        async def wait() -> None:
            await b.wait_for_work("f", 30)  # far past the safety-net poll
            woke.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.1)  # b's dispatcher is idle, waiting
                started = time.monotonic()
                await a.publish([(Event(type="x", id="e1"), ["f"])])
                await woke.wait()
        assert time.monotonic() - started < 0.5
        [delivery] = await b.claim("f", 10, time.time())
        assert delivery.event.id == "e1"


async def test_a_wake_up_while_busy_is_kept_for_the_next_wait() -> None:
    async with nodes(2) as (a, b):
        await b.wait_for_work("f", 0.01)  # an earlier wait that timed out
        await a.publish([(Event(type="x", id="e1"), ["f"])])
        with anyio.fail_after(5):
            while "f" not in b._woken:  # b was not waiting: it keeps the wake-up
                await anyio.sleep(0.01)
            started = time.monotonic()
            await b.wait_for_work("f", 30)
        assert time.monotonic() - started < 0.5  # not the 1 s poll


async def test_the_last_settle_after_retention_passed_deletes_the_event() -> None:
    async with nodes(1) as (store,):
        await store.publish([(Event(type="x", id="e1"), ["f", "g"])])
        [f] = await store.claim("f", 10, time.time())
        await store.succeed(f, ok(), [])
        future = time.time() + 3600
        with redis.Redis.from_url(URL, decode_responses=True) as client:
            await store.prune(events_before=future, history_before=0)
            assert client.exists("fnrun:ev:e1")  # g's delivery is still pending
            await store.prune(events_before=future, history_before=0)  # indexed again
            assert client.exists("fnrun:ev:e1")
            [g] = await store.claim("g", 10, time.time())
            await store.succeed(g, ok(), [])
            assert not client.exists("fnrun:ev:e1")
            assert client.xlen("fnrun:idx") == 1  # pruned at the next pass


async def test_succeed_many_settles_a_batch_among_many_other_running_deliveries() -> None:
    async with nodes(1) as (store,):
        await store.publish([(Event(type="x", id=f"e{n}"), ["f"]) for n in range(600)])
        claimed = await store.claim("f", 600, time.time())
        # Every other one: the range of the batch holds 300 running ones not in it.
        await store.succeed_many([(d, ok(), []) for d in claimed[::2]])
        assert (await store.counts())["f"] == Counts(running=300)
        await store.succeed_many([(d, ok(), []) for d in claimed[1::2]])
        assert (await store.counts())["f"] == Counts()


async def test_retries_written_before_attempts_moved_into_entries_keep_their_count() -> None:
    async with nodes(1) as (store,):
        await store.publish([(Event(type="x", id="e1"), ["f"])])
        [one] = await store.claim("f", 10, time.time())
        await store.fail(one, crashed(), time.time())
        first = one.id.partition("/")[2]
        with redis.Redis.from_url(URL, decode_responses=True) as client:
            # The earlier layout: member "d event", attempts in the a:{fn} hash.
            assert client.zrange("fnrun:z:f", 0, -1) == [f"{first}:1 e1"]
            client.delete("fnrun:z:f")
            client.zadd("fnrun:z:f", {f"{first} e1": 0})
            client.hset("fnrun:a:f", first, 4)
        [five] = await store.claim("f", 10, time.time())
        assert (five.id, five.attempt) == (one.id, 5)
        await store.succeed(five, ok(), [])
        assert (await store.counts())["f"] == Counts()
