"""Lost wake-ups (issue 17 point 11): work stored while a dispatcher is between
"nothing to claim" and "wait for a wake-up" must end that wait at once.

Each test makes the idle poll far longer than its deadline, so a lost wake-up
fails it instead of being covered by the poll.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from runtime.events import Event
from runtime.store import sqlite_watch
from runtime.store.base import Delivery, Store
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LONG = 3600.0
"""The wait's timeout: never reached by a test that passes."""
PROMPT = 2.0
"""Seconds within which a wait with work to do returns."""


class Busy:
    """A dispatcher of this process that takes no hand-off (as when its buffer is full)."""

    def room(self) -> int:
        return 0

    def accept(self, deliveries: Sequence[Delivery]) -> None:
        raise AssertionError("a consumer without room was handed deliveries")


def no_poll(store: Store) -> None:
    """Make Redis's 1 s safety-net poll an hour, as FNRUN_IDLE_POLL does."""
    if hasattr(store, "_wake_poll"):
        store._wake_poll = LONG


async def returns_promptly(store: Store, function: str) -> float:
    start = time.monotonic()
    with anyio.fail_after(PROMPT):
        await store.wait_for_work(function, LONG)
    return time.monotonic() - start


async def test_work_published_between_an_empty_claim_and_the_wait_ends_the_wait(
    store: Store,
) -> None:
    no_poll(store)
    store.attach("f", Busy()).caught_up = True
    assert await store.claim("f", 10, time.time()) == []  # nothing: the dispatcher will wait
    await store.publish([(Event(type="x", id="e1"), ["f"])])  # before it waits
    await returns_promptly(store, "f")
    [delivery] = await store.claim("f", 10, time.time())
    assert delivery.event.id == "e1"


async def test_a_wake_up_for_one_function_leaves_another_waiting(store: Store) -> None:
    no_poll(store)
    await store.publish([(Event(type="x", id="e1"), ["f"])])
    with anyio.move_on_after(0.3) as scope:
        await store.wait_for_work("g", LONG)
    assert scope.cancelled_caught


async def test_another_process_committing_before_the_watch_begins_ends_the_wait(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with SqliteStore(url) as supervisor, SqliteStore(url) as emit:
        assert await supervisor.claim("a", 10, time.time()) == []
        # `fnrun emit` commits after that claim, before the dispatcher's wait
        # begins: the watch used to take this commit as its starting point.
        await emit.publish([(Event(type="x", id="e1"), ["a"])])
        await returns_promptly(supervisor, "a")
        [delivery] = await supervisor.claim("a", 10, time.time())
        assert delivery.event.id == "e1"


async def test_another_process_committing_wakes_a_dispatcher_busy_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_watch, "EXTERNAL_POLL", 0.05)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with SqliteStore(url) as supervisor, SqliteStore(url) as emit:
        supervisor.attach("a", Busy()).caught_up = True
        assert await supervisor.claim("a", 10, time.time()) == []  # a is busy, not waiting
        async with anyio.create_task_group() as tg:
            tg.start_soon(supervisor.wait_for_work, "c", LONG)  # c watches meanwhile
            await anyio.wait_all_tasks_blocked()
            await emit.publish([(Event(type="x", id="e1"), ["a"])])
            with anyio.fail_after(PROMPT):  # c sees the commit and wakes everyone...
                while "c" in supervisor.waiting():
                    await anyio.sleep(0.01)
        # ...a too, though it was not waiting: its claim ran before that commit.
        await returns_promptly(supervisor, "a")
        [delivery] = await supervisor.claim("a", 10, time.time())
        assert delivery.event.id == "e1"
