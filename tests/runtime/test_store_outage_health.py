"""/_/health names a store outage that only producers have met.

No dispatcher needs the store while its function is idle, so no failing claim
tells /_/health that the store is gone; the webhooks and `POST /_/events`
answering 503 meanwhile must.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.store import sqlite_watch
from tests.runtime.supervised import one_function, running, short_lock_waits, write_lock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

EVENT = {"specversion": "1.0", "source": "t", "type": "nobody.listens"}
CLOUDEVENT = {"content-type": "application/cloudevents+json"}


async def test_health_names_an_outage_that_only_producers_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short_lock_waits(monkeypatch)
    # The idle dispatcher looks for other processes' commits far apart, so the
    # whole test falls between two of its looks: it never meets the lock.
    monkeypatch.setattr(sqlite_watch, "EXTERNAL_POLL", 3600.0)
    db = tmp_path / "state.db"
    project = one_function(tmp_path, "h", "def handle(event):\n    return None\n",
                           "webhook: {path: /hooks/h}")
    async with running(project, f"sqlite:///{db}") as (_, client):

        async def store_error() -> str | None:
            health = await client.get("/_/health")
            assert health.status_code == 200  # a restart cannot bring a store back
            error: str | None = health.json()["store_error"]
            return error

        assert (await client.post("/hooks/h", json={"n": 0})).status_code == 202
        assert await store_error() is None
        with write_lock(db):
            assert (await client.post("/hooks/h", json={"n": 1})).status_code == 503
            during_webhook = await store_error()
        assert (await client.post("/hooks/h", json={"n": 2})).status_code == 202
        after_webhook = await store_error()
        with write_lock(db):
            refused = await client.post("/_/events", json={**EVENT, "id": "e1"},
                                        headers=CLOUDEVENT)
            assert refused.status_code == 503
            during_api = await store_error()
        accepted = await client.post("/_/events", json={**EVENT, "id": "e2"},
                                     headers=CLOUDEVENT)
        assert accepted.status_code == 202
        after_api = await store_error()

    for during in (during_webhook, during_api):
        assert during is not None and "database is locked" in during
    # The next write that went through shows the store is back.
    assert after_webhook is None and after_api is None
