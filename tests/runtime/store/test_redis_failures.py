"""Background failures of the Redis store are logged: once when they start, once when they end.

The heartbeat and the wake-up listener used to swallow every error (issue 17
point 10): a node that other nodes took for dead said nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import pytest

from runtime.store.redis import RedisStore
from tests.e2e.harness import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.timeout(60)]


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "fnrun.store" and text in r.getMessage()]


async def until(condition: Callable[[], object]) -> None:
    with anyio.fail_after(20):
        while not condition():
            await anyio.sleep(0.05)


async def test_heartbeat_and_wake_listener_log_a_failure_once_and_its_end_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fnrun.store")
    store = RedisStore(own_redis.url)
    store.heartbeat_ttl = 0.4  # a beat every 0.1 s: many failed beats below
    await store.open()
    try:
        listener = store._wake_listener
        assert listener is not None
        await until(lambda: store.beat_trouble is not None)
        beat = store.beat_trouble
        assert beat is not None
        assert caplog.records == []  # nothing to say while Redis answers

        own_redis.kill()
        # Several failed beats and reconnects each, and still one line each.
        await until(lambda: beat.failures >= 5 and listener.trouble.failures >= 3)
        [beat_down] = lines(caplog, "the Redis heartbeat fails")
        assert "other nodes take this node's running deliveries over" in beat_down
        assert "Connection refused" in beat_down or "Error" in beat_down
        [listener_down] = lines(caplog, "the Redis wake-up listener fails")
        assert "starts only at the next poll" in listener_down
        assert all(r.levelno == logging.WARNING for r in caplog.records)

        own_redis.start()
        await until(lambda: beat.failures == 0 and listener.trouble.failures == 0)
        [beat_up] = lines(caplog, "the Redis heartbeat works again")
        [listener_up] = lines(caplog, "the Redis wake-up listener works again")
        assert "failed attempts" in beat_up and "failed attempts" in listener_up
        assert len(caplog.records) == 4
    finally:
        await store.close()
