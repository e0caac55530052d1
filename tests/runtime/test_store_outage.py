"""A store that stops answering for a while: the supervisor waits it out.

Another process holds the SQLite file's write lock (as a `sqlite3` shell left
in a transaction, or a backup tool, would). Meanwhile webhooks answer 503,
claims and settles wait, and nothing is lost or run twice; once the lock is
released, everything goes on without a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from tests.runtime.supervised import one_function, running, short_lock_waits, write_lock

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

HANDLER = """\
import time

def handle(event):
    with open({log!r}, "a") as f:
        f.write(event.id + "\\n")
    time.sleep(0.1)
"""


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def test_a_locked_sqlite_store_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    short_lock_waits(monkeypatch)
    caplog.set_level(logging.INFO)
    log, db = tmp_path / "ran.log", tmp_path / "state.db"
    project = one_function(tmp_path, "c", HANDLER.format(log=str(log)),
                           "webhook: {path: /hooks/c}")
    async with running(project, f"sqlite:///{db}") as (_, client):
        accepted = []
        for i in range(20):  # two seconds of work, one at a time
            answer = await client.post("/hooks/c", json={"i": i})
            assert answer.status_code == 202
            accepted.append(answer.json()["id"])
        with write_lock(db):
            refused = await client.post("/hooks/c", json={"i": "locked"})
            api_refused = await client.post("/_/events", json={
                "specversion": "1.0", "id": "x", "source": "t", "type": "t.x",
            }, headers={"content-type": "application/cloudevents+json"})
            # Outcomes keep arriving while the lock is held: their
            # writes wait, and so do the claims behind them.
            with anyio.fail_after(20):
                while (during := await client.get("/_/health")).json()["store_error"] is None:
                    await anyio.sleep(0.05)
            await anyio.sleep(1)
            assert len(ran(log)) < len(accepted), "the lock came too late to matter"
        answer = await client.post("/hooks/c", json={"i": "after"})
        assert answer.status_code == 202
        accepted.append(answer.json()["id"])
        while sorted(set(ran(log))) != sorted(accepted):
            await anyio.sleep(0.05)
        health = await client.get("/_/health")

    for answer in (refused, api_refused):  # a webhook, and the API's own routes
        assert answer.status_code == 503
        assert answer.json() == {"error": "store unavailable, try again later"}
        assert answer.headers["retry-after"] == "5"
    # Health tells why deliveries wait, and stays 200: a restart cannot fix a store.
    assert during.status_code == 200
    assert "database is locked" in during.json()["store_error"]
    assert health.status_code == 200 and health.json()["store_error"] is None
    # Every outcome was recorded once the lock went: nothing ran twice.
    assert sorted(ran(log)) == sorted(accepted)
    text = caplog.text
    assert "POST /hooks/c: SQLite write failed: database is locked" in text
    assert "POST /_/events: SQLite write failed: database is locked" in text
    assert "cannot claim deliveries, trying again until the store answers" in text
    assert "claiming deliveries again" in text
    assert "could not record" not in text
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
