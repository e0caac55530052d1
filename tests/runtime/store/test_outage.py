"""Every adapter's successful publish clears the outage that producers recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from runtime.errors import StoreUnavailable
from runtime.events import Event
from runtime.store.base import Store
from runtime.store.redis import RedisStore
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

REDIS_URL = "redis://127.0.0.1:6379/9"
"""DB 9 only, flushed around the test: never anyone's DB 0."""


def _flush(missing: Callable[[str], NoReturn]) -> None:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        missing(f"Redis is not reachable at {REDIS_URL}: {exc}")


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, service_missing: Callable[[str], NoReturn]
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(f"sqlite:///{tmp_path / 'state.db'}")
    else:
        _flush(service_missing)
        opened = RedisStore(REDIS_URL)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if request.param == "redis":
            _flush(service_missing)


async def test_a_publish_that_succeeds_clears_the_outage(store: Store) -> None:
    assert store.outage.error is None
    store.outage.failed(StoreUnavailable("redis: publish: Connection refused"))
    assert store.outage.error == "redis: publish: Connection refused"
    assert await store.publish([(Event(type="x", id="e1"), ["f"])]) == [True]
    assert store.outage.error is None
