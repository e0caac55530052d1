"""Flow rules on Redis keep one clock for the cluster (SPEC 12): two nodes share a
rate budget, a quiet period and a retry's backoff even when one node's clock runs
1.5 s ahead of the other's, since the scripts stamp them with Redis's `TIME`.
Before, each node stamped its own clock: the node ahead spent a budget the other
had spent (4 starts in a period of 2) and ran a debounced event early."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import pytest
import redis

from runtime.clock import SystemClock
from runtime.events import Event, Outcome
from runtime.flow.lane import FlowLane
from runtime.flow.rules import FlowRules, RateLimit
from runtime.store.redis import RedisStore
from runtime.store.redis_flow import RedisFlow
from tests.runtime.store.nodes import redis_nodes
from tests.services import redis_url

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(30)]

URL = redis_url(14)
AHEAD = 1.5
"""How far node B's clock runs ahead of node A's (and of Redis's)."""


@pytest.fixture
async def pair(service_missing: Callable[[str], NoReturn]) -> AsyncIterator[list[RedisStore]]:
    """Two nodes on DB 14 (flushed before and after)."""
    try:
        with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {URL}: {exc}")
    async with redis_nodes(URL, 2) as nodes:
        yield nodes
    with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
        client.flushdb()


def lanes(nodes: list[RedisStore], **rules: object) -> tuple[FlowLane, FlowLane]:
    """Lanes of function f on nodes A and B; B's wall clock is `AHEAD` s ahead."""
    a, b = (FlowLane(node, "f", FlowRules(key=("data", "k"), keyed=True, **rules),  # type: ignore[arg-type]
                     SystemClock()) for node in nodes)
    assert isinstance(b.backend, RedisFlow)
    b.backend.wall = lambda: time.time() + AHEAD
    return a, b


def events(count: int, key: str = "a") -> list[tuple[Event, list[str]]]:
    return [(Event(type="x", id=f"{key}-{n}", data={"k": key, "n": n}), ["f"])
            for n in range(count)]


async def test_a_node_ahead_shares_the_rate_budget(pair: list[RedisStore]) -> None:
    a, b = lanes(pair, limit=8, rate=RateLimit(2, 1.0))
    await pair[0].publish(events(6))
    assert len(await a.claim("f", 8, time.time())) == 2
    assert await b.claim("f", 8, time.time() + AHEAD) == []  # the budget is spent
    due = await b.next_due("f")  # in B's clock: when A's starts leave the window
    assert due is not None and 0.5 + AHEAD < due - time.time() <= 1.0 + AHEAD


async def test_a_node_ahead_keeps_the_quiet_period(pair: list[RedisStore]) -> None:
    a, b = lanes(pair, limit=4, debounce=1.0)
    await pair[0].publish(events(3))
    assert await b.claim("f", 4, time.time() + AHEAD) == []  # not quiet for a second yet
    assert await a.claim("f", 4, time.time()) == []
    due = await b.next_due("f")
    assert due is not None and AHEAD < due - time.time() <= 1.0 + AHEAD
    [last] = await b.claim("f", 4, time.time() + AHEAD + 1.05)  # B jumps past it
    assert last.event.id == "a-2"


async def test_a_retry_waits_its_backoff_on_every_node(pair: list[RedisStore]) -> None:
    a, b = lanes(pair, limit=4, order=True)
    await pair[0].publish(events(2))
    [first] = await b.claim("f", 4, time.time() + AHEAD)
    await b.fail(first, Outcome("error", 1.0, 0.01, error="boom"), time.time() + AHEAD + 0.5)
    assert await a.claim("f", 4, time.time()) == []  # its key waits for the retry
    assert await a.claim("f", 4, time.time() + 0.3) == []
    [again] = await a.claim("f", 4, time.time() + 0.55)
    assert (again.event.id, again.attempt) == ("a-0", 2)
