"""Dispatcher with a real SQLite store and real worker processes: batches, crashes, counts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.clock import SystemClock
from runtime.delivery.dispatcher import MAX_BATCH, Bell, Dispatcher, batch_size
from runtime.errors import Where
from runtime.events import Event, Outcome
from runtime.metrics import Metrics
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec, RetryPolicy
from runtime.store.base import Delivery, Targets
from runtime.store.sqlite import SqliteStore
from tests.runtime.procs import appended_lines

HANDLERS = Path(__file__).parent / "handlers"
LOG = logging.getLogger("tests.dispatcher")

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    ("mean", "buffered", "runners", "expected"),
    [
        (0.00002, 1000, 2, MAX_BATCH),  # no-op handlers: full batches
        (0.001, 1000, 2, 5),  # ~5 ms of work per batch
        (0.5, 1000, 2, 1),  # slow handlers: one at a time
        (0.0001, 10, 2, 5),  # a fair share of a short buffer, not all of it
        (0.0001, 1, 4, 1),
        (0.0, 3, 1, 3),
    ],
)
def test_batch_size(mean: float, buffered: int, runners: int, expected: int) -> None:
    assert batch_size(mean, buffered, runners) == expected


def test_a_pipelined_executor_takes_full_batches_whatever_its_items_last() -> None:
    """A sink's publishes of one batch wait on the broker together: 2 ms each is no reason
    to run only 2-3 of them at once."""
    assert batch_size(0.002, 1000, 2) == 2
    assert batch_size(0.002, 1000, 2, pipelined=True) == MAX_BATCH
    assert batch_size(0.002, 10, 2, pipelined=True) == 5  # still a fair share of the buffer


async def test_a_bell_wakes_every_waiter_once_and_remembers_no_ring() -> None:
    bell, woken = Bell(), []

    async def waiter(name: str) -> None:
        await bell.wait()
        woken.append(name)

    bell.ring()  # nobody waits: nothing to remember
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for name in "ab":
                tg.start_soon(waiter, name)
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            bell.ring()
            bell.ring()  # both already woken: costs nothing, wakes nobody twice
            await anyio.wait_all_tasks_blocked()
            assert sorted(woken) == ["a", "b"]
            tg.start_soon(waiter, "c")  # a wait after a ring waits for the next one
            await anyio.wait_all_tasks_blocked()
            assert "c" not in woken
            bell.ring()
    assert sorted(woken) == ["a", "b", "c"]


def actions_spec(**options: Any) -> FunctionSpec:
    """Function "fn" running tests/runtime/handlers/actions.py:handle."""
    return FunctionSpec(
        name="fn", where=Where(Path("f.yaml"), 1, 1), handler_file=HANDLERS / "actions.py",
        handler_attr="handle", **options,
    )


def no_route(events: Sequence[Event], cause: Delivery) -> list[tuple[Event, Targets]]:
    return [(event, ["nobody"]) for event in events]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
    await store.open()
    yield store
    await store.close()


async def drain(
    store: SqliteStore, spec: FunctionSpec, done: Callable[[], Any], within: float = 30,
) -> Dispatcher:
    """Run a dispatcher for `spec` until `done()` holds, then stop it gracefully."""
    pool = WorkerPool(spec, log=LOG)
    dispatcher = Dispatcher(
        spec, pool, store, clock=SystemClock(), metrics=Metrics(), route=no_route,
        log=LOG, poll=0.05,
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            deadline = time.monotonic() + within
            while not done():
                assert time.monotonic() < deadline, "deliveries did not drain in time"
                await anyio.sleep(0.02)
            dispatcher.stop()
    finally:
        await pool.aclose(grace=1)
    return dispatcher


def runs(log: Path) -> list[tuple[int, int]]:
    """(n, pid) of every attempt the `record` action started."""
    lines = appended_lines(log)
    return [(int(n), int(pid)) for n, pid, *_ in (line.split() for line in lines)]


async def test_every_event_runs_once_in_batches(store: SqliteStore, tmp_path: Path) -> None:
    log = tmp_path / "log"
    spec = actions_spec(concurrency=2)
    count = 600
    events = [Event(type="t", data={"do": "record", "log": str(log), "n": n}) for n in range(count)]
    await store.publish([(event, ["fn"]) for event in events])
    await drain(store, spec, lambda: len(runs(log)) == count)
    seen = runs(log)
    assert sorted(n for n, _ in seen) == list(range(count))  # each exactly once
    assert "fn" not in await store.counts()  # nothing pending, running or dead
    history = await store.history("fn", limit=count + 10)
    assert len(history) == count and all(h.status == "ok" for h in history)


async def test_a_crash_mid_batch_reruns_only_the_unstarted(
    store: SqliteStore, tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    spec = actions_spec(concurrency=1, retry=RetryPolicy(max_attempts=1))
    count, crashing = 200, {17, 90, 150}
    events = [
        Event(type="t", data={"do": "record", "log": str(log), "n": n, "crash": n in crashing})
        for n in range(count)
    ]
    await store.publish([(event, ["fn"]) for event in events])
    await drain(store, spec, lambda: len(runs(log)) >= count)
    seen = runs(log)
    # Every event started exactly once: the crash is charged to its own item,
    # and the items after it in its batch ran later, in a new worker.
    assert sorted(n for n, _ in seen) == list(range(count))
    assert [n for n, _ in seen] == list(range(count))  # and in order (one runner)
    assert len({pid for _, pid in seen}) == len(crashing) + 1
    dead = await store.dead_letters("fn")
    assert sorted(d.event.data["n"] for d in dead) == sorted(crashing)
    assert all(d.attempts == 1 and d.error == "worker exited with code 4" for d in dead)
    history = await store.history("fn", limit=count + 10)
    assert sum(h.status == "ok" for h in history) == count - len(crashing)
    assert {h.attempt for h in history} == {1}  # unstarted items kept their attempt


async def test_stop_ends_a_long_idle_wait_at_once(store: SqliteStore) -> None:
    """An idle dispatcher waits up to `poll` (30 s in the supervisor); stop() must not."""
    spec = FunctionSpec(
        name="idle", where=Where(Path("f.yaml"), 1, 1),
        handler_file=HANDLERS / "actions.py", handler_attr="handle",
    )
    pool = WorkerPool(spec, log=LOG)
    try:
        for pause in (0.0, 0.001, 0.01, 0.2):  # stop at several points of the claim loop
            dispatcher = Dispatcher(
                spec, pool, store, clock=SystemClock(), metrics=Metrics(), route=no_route,
                log=LOG, poll=30.0,
            )
            start = time.monotonic()
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(dispatcher.run)
                    await anyio.sleep(pause)
                    dispatcher.stop()
            assert time.monotonic() - start < 2
    finally:
        await pool.aclose(grace=1)


def idle_dispatcher(store: SqliteStore) -> Dispatcher:
    """A dispatcher that is not running: its Consumer side alone."""
    spec = actions_spec(concurrency=2)
    return Dispatcher(
        spec, WorkerPool(spec, log=LOG), store, clock=SystemClock(), metrics=Metrics(),
        route=no_route, log=LOG,
    )


async def test_fresh_work_is_handed_over_only_once_caught_up(store: SqliteStore) -> None:
    dispatcher = idle_dispatcher(store)
    inlet = store.attach("fn", dispatcher)
    assert inlet.reserve(1) == 0  # nothing claimed yet: a backlog may wait in the store
    inlet.caught_up = True  # as after a claim that came back short
    room = dispatcher.room()
    assert room == dispatcher._prefetch()
    assert inlet.reserve(room + 5) == room  # more than it has room for...
    assert inlet.reserve(1) == 0  # ...so the rest, and what follows, is claimed in order
    assert not inlet.caught_up
    assert inlet.settle([], room) == [] and inlet.reserved == 0
    inlet.caught_up = True
    handed = Delivery("1", "fn", Event(type="t"), 1)
    assert inlet.reserve(1) == 1 and inlet.settle([handed], 1) == []
    assert list(dispatcher._buffer) == [handed] and dispatcher.room() == room - 1
    dispatcher.stop()
    assert dispatcher.room() == 0 and inlet.reserve(1) == 0
    store.detach("fn", inlet)
    refused = Delivery("2", "fn", Event(type="t"), 1)
    assert inlet.settle([refused], 0) == [refused]  # detached: the store releases it
    assert list(dispatcher._buffer) == [handed]


async def test_events_published_to_an_idle_dispatcher_skip_the_claim(
    store: SqliteStore, tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    spec = actions_spec(concurrency=2)
    claimed: list[str] = []
    claim = store.claim

    async def recording_claim(function: str, limit: int, now: float) -> list[Delivery]:
        got = await claim(function, limit, now)
        claimed.extend(d.event.id for d in got)
        return got

    store.claim = recording_claim  # type: ignore[method-assign]

    def event(n: int) -> Event:
        return Event(type="t", id=f"e{n}", data={"do": "record", "log": str(log), "n": n})

    backlog, trickle = 100, 30
    await store.publish([(event(n), ["fn"]) for n in range(backlog)])

    async def publish_slowly() -> None:
        while len(runs(log)) < backlog:
            await anyio.sleep(0.01)
        for n in range(backlog, backlog + trickle):
            await store.publish([(event(n), ["fn"])])
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_slowly)
        await drain(store, spec, lambda: len(runs(log)) == backlog + trickle)
    assert sorted(n for n, _ in runs(log)) == list(range(backlog + trickle))  # once each
    assert set(claimed) >= {f"e{n}" for n in range(backlog)}  # the backlog was claimed
    handed = trickle - len(set(claimed) - {f"e{n}" for n in range(backlog)})
    assert handed >= trickle // 2, claimed  # most fresh events never went through a claim
    assert "fn" not in await store.counts()
    history = await store.history("fn", limit=backlog + trickle + 10)
    assert {h.attempt for h in history} == {1}


async def test_a_free_runner_takes_the_whole_buffer_while_the_other_is_busy(
    store: SqliteStore, tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    spec = actions_spec(concurrency=2)
    pool = WorkerPool(spec, log=LOG)
    sizes: list[int] = []
    invoke_many = pool.invoke_many

    async def counted(items: Sequence[tuple[Event, int]]) -> list[Outcome]:
        sizes.append(len(items))
        return await invoke_many(items)

    pool.invoke_many = counted  # type: ignore[method-assign]
    dispatcher = Dispatcher(
        spec, pool, store, clock=SystemClock(), metrics=Metrics(), route=no_route,
        log=LOG, poll=0.05,
    )
    dispatcher._mean_duration = 0.0001  # as measured for quick handlers: batches may be large

    def event(n: int, **extra: Any) -> Event:
        return Event(type="t", data={"do": "record", "log": str(log), "n": n, **extra})

    await store.publish([(event(0, seconds=0.5), ["fn"])])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.run)
            with anyio.fail_after(10):
                while not runs(log):  # one runner busy from here on
                    await anyio.sleep(0.01)
            await store.publish([(event(n), ["fn"]) for n in range(1, 9)])
            with anyio.fail_after(10):
                while len(runs(log)) < 9:
                    await anyio.sleep(0.01)
            dispatcher.stop()
    finally:
        await pool.aclose(grace=1)
    assert sorted(n for n, _ in runs(log)) == list(range(9))
    # The free runner takes all eight at once, not half and then a halving
    # tail (4, 2, 1, 1) while the other runner is still busy.
    assert sizes == [1, 8]
