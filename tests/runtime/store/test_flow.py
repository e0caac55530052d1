"""Flow-control claims (SPEC 12) on every store, through the lane a dispatcher uses:
a key's head holds its key while it runs and while its retry waits, other keys flow,
the limit and per-key bounds hold, debounce supersedes, and counts see it all."""

from __future__ import annotations

import sqlite3
import time

import pytest

from runtime.clock import SystemClock
from runtime.events import Event, Outcome
from runtime.flow.lane import FlowLane
from runtime.flow.rules import FlowRules
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

OK = Outcome("ok", 1.0, 0.01)
FAILED = Outcome("error", 1.0, 0.01, error="boom")


def keyed(n: int, key: str) -> Event:
    return Event(type="x", id=f"{key}-{n}", data={"k": key, "n": n})


def lane(store: Store, **rules: object) -> FlowLane:
    return FlowLane(store, "f", FlowRules(key=("data", "k"), keyed=True, **rules),  # type: ignore[arg-type]
                    SystemClock())


async def test_order_key_holds_a_key_through_its_retry(store: Store) -> None:
    flow = lane(store, order=True, limit=8)
    await store.publish([(keyed(n, k), ["f"]) for n in range(3) for k in ("a", "b")])
    first = await flow.claim("f", 10, time.time())
    assert sorted(d.event.id for d in first) == ["a-0", "b-0"]  # one per key
    assert await flow.claim("f", 10, time.time()) == []
    counts = (await store.counts())["f"]
    assert (counts.pending, counts.running) == (4, 2)
    a0, b0 = sorted(first, key=lambda d: d.event.id)
    await flow.fail(a0, FAILED, time.time() + 0.3)  # a waits for its retry
    await flow.succeed(b0, OK, [])
    assert [d.event.id for d in await flow.claim("f", 10, time.time())] == ["b-1"]
    due = await flow.next_due("f")
    assert due is not None and time.time() < due <= time.time() + 0.3
    [retry] = await flow.claim("f", 10, time.time() + 0.35)
    assert (retry.event.id, retry.attempt) == ("a-0", 2)


async def test_limit_and_per_key(store: Store) -> None:
    flow = lane(store, per_key=2, limit=3)
    await store.publish([(keyed(n, k), ["f"]) for n in range(4) for k in ("a", "b")])
    claimed = await flow.claim("f", 10, time.time())
    # On Redis claims bound `limit` for the cluster; a SQLite file has one supervisor,
    # whose `limit` runners bound it, and claims take ahead (per_key still holds).
    assert len(claimed) == (3 if type(store).__name__ == "RedisStore" else 4)
    keys = [d.event.data["k"] for d in claimed]
    assert max(keys.count("a"), keys.count("b")) == 2
    await flow.succeed_many([(d, OK, []) for d in claimed])
    again = await flow.claim("f", 10, time.time())
    keys = [d.event.data["k"] for d in again]
    assert len(again) in (3, 4) and max(keys.count("a"), keys.count("b")) <= 2


async def test_debounce_supersedes_what_waits(store: Store) -> None:
    flow = lane(store, limit=4, debounce=0.2)
    await store.publish([(keyed(n, k), ["f"]) for n in range(5) for k in ("a", "b")])
    assert await flow.claim("f", 10, time.time()) == []  # quiet period not over
    later = await flow.claim("f", 10, time.time() + 0.5)
    assert sorted(d.event.id for d in later) == ["a-4", "b-4"]
    superseded = [r for r in await store.history("f", 50) if r.status == "superseded"]
    assert len(superseded) == 8


async def test_dead_letter_frees_its_key_and_replay_puts_it_back_first(store: Store) -> None:
    flow = lane(store, order=True, limit=8)
    await store.publish([(keyed(n, "a"), ["f"]) for n in range(3)])
    [a0] = await flow.claim("f", 10, time.time())
    await flow.fail(a0, FAILED, None)  # dead letter: the key goes on
    [a1] = await flow.claim("f", 10, time.time())
    assert a1.event.id == "a-1"
    await flow.succeed(a1, OK, [])
    assert await store.replay_dead(time.time(), "f") == 1
    [again] = await flow.claim("f", 10, time.time())
    assert (again.event.id, again.attempt) == ("a-0", 1)  # ahead of a-2, fresh attempts
    assert await flow.claim("f", 10, time.time()) == []


async def test_order_key_walks_heads_of_many_keys_and_forgets_what_ended(store: Store) -> None:
    # 40 keys, 5 deliveries each, published interleaved: every claim hands out
    # exactly the heads of the free keys, in publish order per key, and what
    # succeeded leaves the SQLite store's key index (a dead letter stays in it).
    flow = lane(store, order=True, limit=64)
    keys = [f"k{i:02d}" for i in range(40)]
    await store.publish([(keyed(n, k), ["f"]) for n in range(5) for k in keys])
    seen: dict[str, list[int]] = {k: [] for k in keys}
    for round_ in range(5):
        claimed = await flow.claim("f", 64, time.time())
        assert sorted(d.event.data["k"] for d in claimed) == keys
        for delivery in claimed:
            seen[delivery.event.data["k"]].append(delivery.event.data["n"])
            if (delivery.event.data["k"], round_) == ("k00", 2):
                await flow.fail(delivery, FAILED, None)
            else:
                await flow.succeed(delivery, OK, [])
    assert seen == {k: [0, 1, 2, 3, 4] for k in keys}
    assert await flow.claim("f", 64, time.time()) == []
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            rows = conn.execute("SELECT key FROM flow_keys WHERE function = 'f'").fetchall()
        assert rows == [("k00",)]
