"""Run records on Redis: bounded by RUNS_MAX in the settling scripts, indexes kept in step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn

import pytest
import redis

from runtime.events import Event, Outcome
from runtime.store import redis as redis_store
from runtime.store.base import Call
from tests.runtime.store.nodes import redis_nodes
from tests.services import redis_url

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(60)]

URL = redis_url(13)


@pytest.fixture(autouse=True)
def clean_db(service_missing: Callable[[str], NoReturn]) -> object:
    """Flush DB 13 (only) around each test; skip (or fail under CI) without Redis."""
    try:
        with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {URL}: {exc}")
    yield None
    with redis.Redis.from_url(URL, socket_connect_timeout=1) as client:
        client.flushdb()


async def test_the_oldest_runs_go_past_runs_max_with_their_indexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_store, "RUNS_MAX", 300)
    calls: list[Call] = [
        (("a", "b")[i % 2], Event(type="t", id=f"e{i}"),
         Outcome("ok" if i % 3 else "error", time.time(), 0.001, invocation=f"inv{i:05}"))
        for i in range(1000)
    ]
    async with redis_nodes(URL, 1) as [store]:
        await store.record(calls)  # in chunks: the scripts trim every 256 records
        kept = await store.runs(limit=10_000)
        assert 300 <= len(kept) < 300 + 256
        newest_first = range(999, 999 - len(kept), -1)
        assert [r.invocation for r in kept] == [f"inv{i:05}" for i in newest_first]
        oldest = 1000 - len(kept)
        assert await store.run(f"inv{oldest - 1:05}") is None
        assert await store.runs_for_events([f"e{oldest - 1}"]) == []
    with redis.Redis.from_url(URL, decode_responses=True) as client:
        indexed = sum(client.zcard(f"fnrun:runs:f:{fn}") for fn in "ab")
        by_status = sum(client.zcard(f"fnrun:runs:s:{s}") for s in ("ok", "error"))
        events = len(client.keys("fnrun:runs:e:*"))
        bodies = len(client.keys("fnrun:run:*"))
    assert indexed == by_status == events == bodies == len(kept)
