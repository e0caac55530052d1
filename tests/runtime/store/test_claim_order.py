"""Claims take due retries before fresh deliveries (issue 17 point 12), on every store."""

from __future__ import annotations

import time

import pytest

from runtime.events import Event, Outcome
from runtime.store.base import Store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_due_retry_is_claimed_before_older_fresh_deliveries(
    store: Store,
) -> None:
    await store.publish([(Event(type="x", id="flaky"), ["f"])])
    [first] = await store.claim("f", 1, time.time())
    backlog = [Event(type="x", id=f"b{n}") for n in range(20)]
    await store.publish([(e, ["f"]) for e in backlog])  # due before the retry below
    failed = Outcome(status="error", started=time.time(), duration=0.01, error="boom")
    await store.fail(first, failed, time.time())
    claimed = await store.claim("f", 5, time.time() + 1)
    assert [(d.event.id, d.attempt) for d in claimed] == [
        ("flaky", 2), ("b0", 1), ("b1", 1), ("b2", 1), ("b3", 1)]
    rest = await store.claim("f", 100, time.time() + 1)
    assert [d.event.id for d in rest] == [e.id for e in backlog[4:]]
