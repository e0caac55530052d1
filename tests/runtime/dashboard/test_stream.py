"""The dashboard's live stream against a real SQLite store: what it sends after a
cursor, in what order and batches, and that it ends once the supervisor stops."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.dashboard import runs
from runtime.dashboard.runs import Filters, Stream
from runtime.events import Event, Outcome, Status
from runtime.store.base import Store
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
EVERYTHING: Filters = {"function": None, "status": None, "event_type": None}


@dataclass
class Ingress:
    store: Store


@dataclass
class View:
    ingress: Ingress
    draining: bool = False


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with SqliteStore(f"sqlite:///{tmp_path}/state.db") as opened:
        yield opened


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "POLL", 0.01)


async def finish(store: Store, *functions: str, status: Status = "ok") -> None:
    """Record a finished run of each of `functions` (as sync calls are recorded)."""
    now = time.time()
    error = None if status == "ok" else "boom"
    await store.record([
        (fn, Event(type=f"{fn}.happened"),
         Outcome(status, now, 0.001, invocation=f"{fn}-{n}-{now}", error=error))
        for n, fn in enumerate(functions)])


def rows(message: str) -> list[dict[str, Any]]:
    event_id, data = message.strip().split("\n")
    rows = json.loads(data.removeprefix("data: "))
    assert event_id == f"id: {rows[-1]['seq']}"  # a reconnect resumes after the newest sent
    return list(rows)


async def test_new_runs_come_oldest_first_after_the_cursor_until_the_supervisor_stops(
    store: Store
) -> None:
    await finish(store, "a", "b")
    [first, _] = await store.runs(limit=2)  # newest first
    view = View(Ingress(store))
    feed = Stream(view)._feed(EVERYTHING, cursor=first.seq - 1)
    assert await anext(feed) == "retry: 1000\n\n"
    assert [r["function"] for r in rows(await anext(feed))] == ["b"]
    await finish(store, "c", "d")
    assert [r["function"] for r in rows(await anext(feed))] == ["c", "d"]
    view.draining = True
    with anyio.fail_after(2):
        assert [message async for message in feed] == []


async def test_a_filtered_stream_sends_only_matches_and_a_full_one_waits_for_none(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "BATCH", 2)
    stream = Stream(View(Ingress(store)))
    feed = stream._feed({**EVERYTHING, "status": "error"}, cursor=0)
    assert await anext(feed) == "retry: 1000\n\n"
    assert stream.open == 1
    await finish(store, "a", "b", "c")
    await finish(store, "d", "e", "f", "g", "h", status="error")
    batches = [rows(await anext(feed)) for _ in range(3)]  # 2 a message, no pause between
    assert [[r["function"] for r in batch] for batch in batches] == [["d", "e"], ["f", "g"],
                                                                     ["h"]]
    stream.open = runs.MAX_STREAMS
    crowded = stream._feed(EVERYTHING, cursor=0)
    assert [message async for message in crowded] == ["event: full\ndata: {}\n\n"]
    await feed.aclose()
    assert stream.open == runs.MAX_STREAMS - 1
