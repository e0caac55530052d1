"""Sync calls' history: queued, written in batches in the background, bounded."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runtime.delivery import calls
from runtime.delivery.calls import CallHistory
from runtime.events import Event, Outcome
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
LOG = logging.getLogger("tests.calls")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(f"sqlite:///{tmp_path}/state.db") as opened:
        assert isinstance(opened, SqliteStore)
        yield opened


def ok(n: int) -> Outcome:
    return Outcome(status="ok", started=time.time(), duration=0.001, result=n)


async def test_calls_are_written_in_the_background_and_on_stop(store: SqliteStore) -> None:
    history = CallHistory(store, LOG)
    async with anyio.create_task_group() as tg:
        tg.start_soon(history.run)
        history.add("hook", Event(type="t"), ok(1))
        with anyio.fail_after(5):
            while not await store.history():
                await anyio.sleep(0.02)
        history.add("hook", Event(type="t"), ok(2))
        tg.cancel_scope.cancel()  # stopping writes what is still queued
    assert [r.result for r in await store.history("hook")] == [2, 1]


async def test_rows_wait_while_the_store_fails_and_the_queue_is_bounded(
    store: SqliteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(calls, "MAX_QUEUED", 5)
    closed = SqliteStore(f"sqlite:///{tmp_path}/other.db")  # never opened: every write fails
    history = CallHistory(closed, LOG)
    for n in range(3):
        history.add("hook", Event(type="t"), ok(n))
    await history.flush()
    assert "could not write the history of 3 sync calls" in caplog.text
    for n in range(3, 8):
        history.add("hook", Event(type="t"), ok(n))  # 8 rows, room for 5: the 3 oldest go
    history.store = store
    await history.flush()
    assert [r.result for r in await store.history("hook")] == [7, 6, 5, 4, 3]
    assert "history of 3 sync calls dropped" in caplog.text


async def test_failures_are_all_kept_and_successes_up_to_a_budget_per_interval(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(calls, "OK_PER_FLUSH", 3)
    history = CallHistory(store, LOG)
    failed = Outcome(status="error", started=time.time(), duration=0.001, error="no")
    for n in range(5):
        history.add("hook", Event(type="t"), ok(n))
        history.add("hook", Event(type="t"), failed)
    await history.flush()
    first = await store.history("hook")
    assert [r.result for r in first if r.status == "ok"] == [2, 1, 0]
    assert sum(r.status == "error" for r in first) == 5
    history.add("hook", Event(type="t"), ok(9))  # a new interval, a new budget
    await history.flush()
    assert (await store.history("hook", limit=1))[0].result == 9
