"""Concurrent single invocations sharing batches, against real worker processes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.errors import Where
from runtime.events import Event, Outcome
from runtime.pool.coalescer import fair_share
from runtime.pool.workerpool import WorkerPool
from runtime.specs import FunctionSpec
from tests.runtime.procs import appended_lines

HANDLERS = Path(__file__).parent / "handlers"

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize(("queued", "takers", "most", "expected"), [
    (1, 4, 32, 1),     # fewer items than takers: one each, none idle for nothing
    (10, 4, 32, 3),    # rounded up: 3+3+3+1, not 2+2+2+2 and two left over
    (8, 4, 32, 2),
    (1000, 2, 32, 32),  # capped
    (0, 3, 32, 1),     # at least one
])
def test_fair_share(queued: int, takers: int, most: int, expected: int) -> None:
    assert fair_share(queued, takers, most) == expected


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    spec = FunctionSpec(
        name="fn", where=Where(Path("functions.yaml"), 1, 1),
        handler_file=HANDLERS / "actions.py", handler_attr="handle", concurrency=1, timeout=20,
    )
    made = WorkerPool(spec, log=logging.getLogger("tests.coalescer"))
    yield made
    await made.aclose(grace=1)
    assert made.live_workers == 0


def record(log: Path, n: int, **extra: Any) -> Event:
    return Event(type="test.event", data={"do": "record", "log": str(log), "n": n, **extra})


def starts(log: Path) -> list[tuple[int, int]]:
    """(n, pid) of every item that started, in order."""
    lines = appended_lines(log)
    return [(int(line.split()[0]), int(line.split()[1])) for line in lines]


async def burst(pool: WorkerPool, log: Path, crash_at: int | None) -> dict[int, Outcome]:
    """A slow call, then calls 1..6 queued behind it while it runs."""
    outcomes: dict[int, Outcome] = {}

    async def call(n: int, event: Event) -> None:
        outcomes[n] = await pool.invoke(event, 1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, 0, record(log, 0, seconds=0.5))
        with anyio.fail_after(10):
            while not await anyio.Path(log).exists():  # started: the rest must queue
                await anyio.sleep(0.01)
        for n in range(1, 7):
            tg.start_soon(call, n, record(log, n, crash=n == crash_at))
    return outcomes


async def test_queued_calls_each_get_their_own_result(pool: WorkerPool, tmp_path: Path) -> None:
    log = tmp_path / "log"
    outcomes = await burst(pool, log, crash_at=None)
    assert {n: (o.status, o.result) for n, o in outcomes.items()} == {
        n: ("ok", {"json": n}) for n in range(7)
    }
    ran = starts(log)
    assert sorted(n for n, _ in ran) == list(range(7))  # each ran exactly once
    assert len({pid for _, pid in ran}) == 1  # one warm worker, concurrency 1


async def test_crash_is_charged_to_one_call_and_the_rest_still_run(
    pool: WorkerPool, tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    outcomes = await burst(pool, log, crash_at=3)
    assert outcomes[3].status == "crash"
    assert {n: o.result for n, o in outcomes.items() if n != 3} == {
        n: {"json": n} for n in (0, 1, 2, 4, 5, 6)
    }
    ran = starts(log)
    assert sorted(n for n, _ in ran) == list(range(7))  # nothing ran twice, nothing lost
    pid_of = dict(ran)
    assert pid_of[3] == pid_of[0]
    assert all(pid_of[n] != pid_of[3] for n in (4, 5, 6))  # after the crash: a new worker


async def test_a_call_cancelled_while_queued_never_runs(pool: WorkerPool, tmp_path: Path) -> None:
    log = tmp_path / "log"
    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.invoke, record(log, 0, seconds=0.5), 1)
        with anyio.fail_after(10):
            while not await anyio.Path(log).exists():
                await anyio.sleep(0.01)
        with anyio.move_on_after(0.05) as scope:
            await pool.invoke(record(log, 1), 1)
        assert scope.cancelled_caught
    after = await pool.invoke(record(log, 2), 1)
    assert after.result == {"json": 2}
    assert [n for n, _ in starts(log)] == [0, 2]


async def test_a_free_slot_takes_the_whole_queue_while_the_other_is_busy(tmp_path: Path) -> None:
    spec = FunctionSpec(
        name="fn", where=Where(Path("functions.yaml"), 1, 1),
        handler_file=HANDLERS / "actions.py", handler_attr="handle", concurrency=2, timeout=20,
    )
    pool = WorkerPool(spec, log=logging.getLogger("tests.coalescer"))
    sizes: list[int] = []
    run = pool._singles._run

    async def counted(items: Any) -> list[Outcome]:
        sizes.append(len(items))
        return await run(items)

    pool._singles._run = counted
    log = tmp_path / "log"
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.invoke, record(log, 0, seconds=0.5), 1)
            with anyio.fail_after(10):
                while not await anyio.Path(log).exists():  # one slot busy from here on
                    await anyio.sleep(0.01)
            for n in range(1, 9):
                tg.start_soon(pool.invoke, record(log, n), 1)
    finally:
        await pool.aclose(grace=1)
    assert sorted(n for n, _ in starts(log)) == list(range(9))
    # One batch for the free slot, not a halving tail (4, 2, 1, 1): each batch
    # is a round trip to a worker.
    assert sizes == [1, 8]
