"""A store that stops answering for a while: the supervisor waits it out.

Another process holds the SQLite file's write lock (as a `sqlite3` shell left
in a transaction, or a backup tool, would). Meanwhile webhooks answer 503,
claims and settles wait, and nothing is lost or run twice; once the lock is
released, everything goes on without a restart.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from runtime.manifest import load_settings
from runtime.store import sqlite, sqlite_commit
from runtime.supervisor import Supervisor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

HANDLER = """\
import time

def handle(event):
    with open({log!r}, "a") as f:
        f.write(event.id + "\\n")
    time.sleep(0.1)
"""

LOCKER = """\
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another process holds `db`'s write lock until the block ends."""
    with subprocess.Popen([sys.executable, "-c", LOCKER, str(db)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as locker:
        assert locker.stdin is not None and locker.stdout is not None
        try:
            assert locker.stdout.readline() == "locked\n"
            yield
        finally:
            locker.stdin.close()
            assert locker.wait(10) == 0


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def test_a_locked_sqlite_store_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Production waits 10 s for a lock before it gives up; a fifth of a second
    # lets the test see every give-up path within a second or two.
    monkeypatch.setattr(sqlite_commit, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 200)
    caplog.set_level(logging.INFO)
    log, db = tmp_path / "ran.log", tmp_path / "state.db"
    functions = tmp_path / "proj" / "functions"
    functions.mkdir(parents=True)
    (functions / "c.py").write_text(HANDLER.format(log=str(log)))
    (functions / "c.yaml").write_text(
        "functions:\n  c:\n    handler: c.py:handle\n"
        "    triggers:\n      - webhook: {path: /hooks/c}\n"
    )
    settings = load_settings(tmp_path / "proj", store=f"sqlite:///{db}", port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            assert supervisor.http_server is not None
            async with httpx.AsyncClient(base_url=supervisor.http_server.url) as client:
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
                        while (during := await client.get("/_/health")).json()[
                            "store_error"
                        ] is None:
                            await anyio.sleep(0.05)
                    await anyio.sleep(1)
                    assert len(ran(log)) < len(accepted), "the lock came too late to matter"
                answer = await client.post("/hooks/c", json={"i": "after"})
                assert answer.status_code == 202
                accepted.append(answer.json()["id"])
                while sorted(set(ran(log))) != sorted(accepted):
                    await anyio.sleep(0.05)
                health = await client.get("/_/health")
            supervisor.request_stop()

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
