"""Every adapter's successful publish clears the outage that producers recorded."""

from __future__ import annotations

import pytest

from runtime.errors import StoreUnavailable
from runtime.events import Event
from runtime.store.base import Store

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_publish_that_succeeds_clears_the_outage(store: Store) -> None:
    assert store.outage.error is None
    store.outage.failed(StoreUnavailable("redis: publish: Connection refused"))
    assert store.outage.error == "redis: publish: Connection refused"
    assert await store.publish([(Event(type="x", id="e1"), ["f"])]) == [True]
    assert store.outage.error is None
