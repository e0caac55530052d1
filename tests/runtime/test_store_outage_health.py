"""/_/health names a store outage that only producers have met.

No dispatcher needs the store while its function is idle, so no failing claim
tells /_/health that the store is gone; the webhooks and `POST /_/events`
answering 503 meanwhile must.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from runtime.manifest import load_settings
from runtime.store import sqlite, sqlite_commit, sqlite_watch
from runtime.supervisor import Supervisor
from tests.runtime.test_store_outage import write_lock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

EVENT = {"specversion": "1.0", "source": "t", "type": "nobody.listens"}
CLOUDEVENT = {"content-type": "application/cloudevents+json"}


async def test_health_names_an_outage_that_only_producers_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fifth of a second of waiting for the lock, not production's 10 s.
    monkeypatch.setattr(sqlite_commit, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 200)
    # The idle dispatcher looks for other processes' commits far apart, so the
    # whole test falls between two of its looks: it never meets the lock.
    monkeypatch.setattr(sqlite_watch, "EXTERNAL_POLL", 3600.0)
    db = tmp_path / "state.db"
    functions = tmp_path / "proj" / "functions"
    functions.mkdir(parents=True)
    (functions / "h.py").write_text("def handle(event):\n    return None\n")
    (functions / "h.yaml").write_text(
        "functions:\n  h:\n    handler: h.py:handle\n"
        "    triggers:\n      - webhook: {path: /hooks/h}\n"
    )
    settings = load_settings(tmp_path / "proj", store=f"sqlite:///{db}", port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            assert supervisor.http_server is not None
            async with httpx.AsyncClient(base_url=supervisor.http_server.url) as client:

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
            supervisor.request_stop()

    for during in (during_webhook, during_api):
        assert during is not None and "database is locked" in during
    # The next write that went through shows the store is back.
    assert after_webhook is None and after_api is None
