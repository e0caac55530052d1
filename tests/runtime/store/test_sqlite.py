"""SQLite-specific facts: the file, its modes, other processes, group commit."""

from __future__ import annotations

import functools
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from runtime.errors import StoreError
from runtime.events import Event, Outcome
from runtime.store import (
    sqlite,
    sqlite_checkpoint,
    sqlite_commit,
    sqlite_rows,
    sqlite_upkeep,
    sqlite_watch,
)
from runtime.store.base import Counts, Delivery, Inlet
from runtime.store.sqlite import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(url_of(tmp_path / "state.db")) as opened:
        assert isinstance(opened, SqliteStore)
        yield opened


def outcome(status: str = "ok", **fields: object) -> Outcome:
    return Outcome(status=status, started=time.time(), duration=0.1, **fields)  # type: ignore[arg-type]


PUBLISHER = textwrap.dedent(
    """
    import sys, anyio
    from runtime.events import Event
    from runtime.store.sqlite import SqliteStore

    async def main(url, count):
        async with SqliteStore(url) as store:
            for i in range(count):
                sent = Event(type="ext.event", data=i)
                await store.publish([(sent, ["a"])])
                print(sent.id, flush=True)

    anyio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


def start_publisher(url: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, url, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


async def test_state_survives_close_and_reopen(tmp_path: Path) -> None:
    url = url_of(tmp_path / "state.db")
    kept, dead = Event(type="a.b", data={"x": 1}), Event(type="a.b", data=b"\x00")
    async with SqliteStore(url) as first:
        await first.publish([(kept, ["a"]), (dead, ["d"])])
        [delivery] = await first.claim("d", 10, time.time())
        await first.fail(delivery, outcome("error", error="bad"), None)
        await first.fire_tick("k", 100.0, Event(type="fnrun.schedule", id="k@100"), [])
    async with SqliteStore(url) as second:
        assert (await second.counts())["a"].pending == 1
        [letter] = await second.dead_letters()
        assert (letter.event, letter.error) == (dead, "bad")
        assert await second.last_tick("k") == 100.0
        [again] = await second.claim("a", 10, time.time())
        assert again.event == kept


def record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths of the files GroupCommit fsyncs, in order."""
    synced: list[str] = []
    fdatasync = sqlite_commit.os.fdatasync

    def recording(fd: int) -> None:
        synced.append(sqlite_commit.os.readlink(f"/proc/self/fd/{fd}"))
        fdatasync(fd)

    monkeypatch.setattr(sqlite_commit.os, "fdatasync", recording)
    return synced


async def test_file_is_in_wal_mode_and_publish_fsyncs_the_wal(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    synced = record_syncs(monkeypatch)
    await store.publish([(Event(type="x"), ["a"])])
    # What synchronous=FULL does in WAL mode: sync the WAL after the COMMIT.
    assert synced == [f"{store.path}-wal"]


async def test_relative_url_resolves_against_cwd_and_creates_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with SqliteStore("sqlite:///.fnrun/deep/state.db") as opened:
        await opened.publish([(Event(type="x"), ["a"])])
    assert (tmp_path / ".fnrun" / "deep" / "state.db").is_file()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "postgres://x"])
def test_bad_url_is_one_clear_error(url: str) -> None:
    with pytest.raises(StoreError, match="bad SQLite store URL"):
        SqliteStore(url)


async def test_unopenable_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open store"):
        await SqliteStore(url_of(tmp_path / "file" / "state.db")).open()


async def test_acknowledged_publishes_survive_kill_9(tmp_path: Path) -> None:
    url = url_of(tmp_path / "state.db")
    with start_publisher(url, 100_000) as publisher:
        assert publisher.stdout is not None
        acked = [publisher.stdout.readline().strip() for _ in range(300)]
        publisher.send_signal(signal.SIGKILL)
        acked += publisher.stdout.read().split()  # acks already printed before the kill
        publisher.wait(timeout=10)
    async with SqliteStore(url) as reopened:
        fresh = await reopened.publish([(Event(type="x", id=i), ["a"]) for i in acked])
    assert not any(fresh), "an acknowledged event was lost"


async def test_another_process_publishing_is_picked_up(store: SqliteStore) -> None:
    got: set[str] = set()
    with start_publisher(store.url, 200) as publisher, anyio.fail_after(20):
        # Our own writes go on meanwhile: both processes share the file.
        await store.publish([(Event(type="own", data=i), ["b"]) for i in range(200)])
        while len(got) < 200:
            await store.wait_for_work("a", 10)  # bounded: no in-process notify comes
            got |= {d.event.id for d in await store.claim("a", 100, time.time())}
        assert publisher.stdout is not None
        assert got == set(publisher.stdout.read().split())
        assert publisher.wait(timeout=10) == 0
    assert (await store.counts())["b"].pending == 200


async def test_publish_wakes_a_waiter_in_this_process(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_watch, "EXTERNAL_POLL", 60.0)
    woke_after: list[float] = []

    async def wait() -> None:
        start = time.monotonic()
        await store.wait_for_work("a", 60)
        woke_after.append(time.monotonic() - start)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await store.publish([(Event(type="x"), ["a"])])
    assert woke_after[0] < 5


async def test_concurrent_writes_share_commits(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    commit = sqlite_commit.GroupCommit._commit

    def counting(self: sqlite_commit.GroupCommit, batch: sqlite_commit.Batch) -> None:
        batches.append(len(batch.ops))
        commit(self, batch)

    monkeypatch.setattr(sqlite_commit.GroupCommit, "_commit", counting)
    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(store.publish, [(Event(type="x", data=i), ["a"])])
    assert sum(batches) == 200
    assert len(batches) < 100, batches  # group commit: far fewer transactions than writes
    assert (await store.counts())["a"].pending == 200


async def test_row_writes_of_many_callers_run_once_per_writer_per_commit(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[int]] = []
    transactions: list[int] = []
    commit = sqlite_commit.GroupCommit._commit

    def counting(self: sqlite_commit.GroupCommit, batch: sqlite_commit.Batch) -> None:
        transactions.append(len(batch.ops))
        commit(self, batch)

    def write(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
        calls.append([row[0] for row in rows])
        conn.executemany("INSERT INTO scratch VALUES (?)", rows)

    await store._write(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER)"))
    monkeypatch.setattr(sqlite_commit.GroupCommit, "_commit", counting)
    writer = store._writer
    assert writer is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.publish, [(Event(type="x"), ["a"])])  # the batch the rest joins
        for i in range(20):
            tg.start_soon(writer.write_rows, [(write, [(2 * i,), (2 * i + 1,)])])
    # One call of the writer per transaction, with every caller's rows in it.
    assert len(calls) == len(transactions) < 20, (calls, transactions)
    assert sorted(n for call in calls for n in call) == list(range(40))
    rows = await store._read("SELECT n FROM scratch ORDER BY n")
    assert [n for (n,) in rows] == list(range(40))


async def test_a_merged_row_write_that_fails_fails_only_its_caller(store: SqliteStore) -> None:
    def write(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
        conn.executemany("INSERT INTO scratch VALUES (?)", rows)  # n is NOT NULL

    await store._write(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER NOT NULL)"))
    writer = store._writer
    assert writer is not None
    errors: list[Exception] = []

    async def put(value: int | None) -> None:
        try:
            await writer.write_rows([(write, [(value,)])])
        except StoreError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for value in (1, None, 2, 3):
            tg.start_soon(put, value)
    assert len(errors) == 1 and "NOT NULL" in str(errors[0])
    assert [n for (n,) in await store._read("SELECT n FROM scratch ORDER BY n")] == [1, 2, 3]


async def test_a_lingering_write_joins_a_publish_or_commits_alone(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[list[bool]] = []
    commit = sqlite_commit.GroupCommit._commit

    def counting(self: sqlite_commit.GroupCommit, batch: sqlite_commit.Batch) -> None:
        transactions.append([op.linger for op in batch.ops])
        commit(self, batch)

    def write(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
        conn.executemany("INSERT INTO scratch VALUES (?)", rows)

    await store._write(lambda conn: conn.execute("CREATE TABLE scratch (n INTEGER)"))
    monkeypatch.setattr(sqlite_commit.GroupCommit, "_commit", counting)
    monkeypatch.setattr(sqlite_commit, "LINGER", 5.0)  # long enough to tell the two apart
    writer = store._writer
    assert writer is not None
    with anyio.fail_after(4):  # the publish takes the lingering write along
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(writer.write_rows, [(write, [(1,)])], linger=True))
            await anyio.wait_all_tasks_blocked()
            await store.publish([(Event(type="x"), ["a"])])
    assert transactions == [[True, False]]
    monkeypatch.setattr(sqlite_commit, "LINGER", 0.05)
    with anyio.fail_after(4):  # alone, it commits once LINGER is over
        await writer.write_rows([(write, [(2,)])], linger=True)
    assert transactions[1:] == [[True]]
    assert [n for (n,) in await store._read("SELECT n FROM scratch ORDER BY n")] == [1, 2]


@pytest.mark.parametrize("count", [0, 1, 3, 4, 21, 64, 341])
@pytest.mark.parametrize("variables", [999, 32766])  # before and since SQLite 3.32
async def test_many_rows_go_in_a_few_multi_row_statements(
    store: SqliteStore, count: int, variables: int
) -> None:
    statements: list[str] = []

    def insert(conn: sqlite3.Connection) -> None:
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variables)
        conn.set_trace_callback(statements.append)
        try:
            rows = [(i, -i, i, -i) for i in range(count)]  # 4 x 256 is over 999
            sqlite_rows.insert_all(conn, "INSERT INTO scratch (a, b, c, d)", rows)
            sqlite_rows.delete_ids(conn, "DELETE FROM scratch WHERE a IN",
                                   [(i,) for i in range(0, count, 2)])
        finally:
            conn.set_trace_callback(None)

    await store._write(lambda conn: conn.execute("CREATE TABLE scratch (a, b, c, d)"))
    await store._write(insert)
    rows = await store._read("SELECT a, b, c, d FROM scratch ORDER BY a")
    assert rows == [(i, -i, i, -i) for i in range(1, count, 2)]
    # Statements of the sizes in STATEMENT_ROWS: a few per write, never one per row.
    most = count // 64 + 3 * 3  # at most 3 of each size below the largest one used
    assert len(statements) <= 2 * most
    assert count < 4 or len(statements) < count


async def test_a_failing_operation_does_not_fail_its_batch(store: SqliteStore) -> None:
    errors: list[Exception] = []

    async def bad() -> None:
        try:
            await store._write(lambda conn: conn.execute("INSERT INTO nowhere VALUES (1)"))
        except StoreError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(50):
            tg.start_soon(store.publish, [(Event(type="x", data=i), ["a"])])
            if i % 10 == 0:
                tg.start_soon(bad)
    assert len(errors) == 5 and "no such table" in str(errors[0])
    assert (await store.counts())["a"].pending == 50


async def test_cancelled_writers_never_stall_the_queue(store: SqliteStore) -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(store.publish, [(Event(type="x", id=f"e{i}"), ["a"])])
            await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        assert await store.publish([(Event(type="x"), ["a"])]) == [True]
        stored = await store.publish([(Event(type="x", id=f"e{i}"), ["a"]) for i in range(50)])
    assert stored.count(False) >= 1  # queued writes went through despite the cancel
    assert (await store.counts())["a"].pending == 51


async def test_a_second_success_publishes_no_emits(store: SqliteStore) -> None:
    await store.publish([(Event(type="x"), ["a"])])
    [delivery] = await store.claim("a", 1, time.time())
    emit = (Event(type="y"), ["b"])
    await store.succeed(delivery, outcome(), [emit])
    await store.succeed(delivery, outcome(), [(Event(type="y"), ["b"])])
    assert (await store.counts())["b"].pending == 1
    assert len(await store.history("a")) == 2


async def test_stored_results_and_tracebacks_are_bounded(store: SqliteStore) -> None:
    await store.publish([(Event(type="x"), ["a"]), (Event(type="x"), ["b"])])
    [first] = await store.claim("a", 1, time.time())
    await store.succeed(first, outcome(result={"blob": "x" * 100_000}), [])
    [record] = await store.history("a")
    assert isinstance(record.result, str) and len(record.result) <= sqlite.MAX_RESULT + 1
    [second] = await store.claim("b", 1, time.time())
    trace = "Traceback\n" + "  frame\n" * 100_000 + "ValueError: the cause"
    await store.fail(second, outcome("error", error="e" * 10_000, traceback=trace), None)
    [letter] = await store.dead_letters()
    assert letter.traceback is not None and letter.traceback.endswith("ValueError: the cause")
    assert len(letter.traceback) <= sqlite.MAX_TRACEBACK + 1
    assert letter.error is not None and len(letter.error) <= sqlite.MAX_ERROR + 1


async def test_remember_forgets_after_its_ttl(store: SqliteStore) -> None:
    assert await store.remember("k", 1, -1) is None  # stored already expired
    assert await store.remember("k", 2, 60) is None
    assert await store.remember("k", 3, 60) == 2


async def test_history_rows_are_bounded(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_upkeep, "MAX_HISTORY", 5)
    await store.publish([(Event(type="x", data=i), ["a"]) for i in range(8)])
    for delivery in await store.claim("a", 10, time.time()):
        await store.succeed(delivery, outcome(result=delivery.event.data), [])
    await store.prune(events_before=0, history_before=0)
    assert [r.result for r in await store.history()] == [7, 6, 5, 4, 3]


def test_event_rows_hold_the_json_envelope(tmp_path: Path) -> None:
    sent = Event(type="a.b", data={"k": "v"}, subject="s")

    async def publish() -> None:
        async with SqliteStore(url_of(tmp_path / "s.db")) as opened:
            await opened.publish([(sent, [])])

    anyio.run(publish)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        body, kind = conn.execute("SELECT body, type FROM events").fetchone()
    assert (json.loads(body), kind) == (sent.to_dict(), "a.b")


async def test_an_idle_wait_lasts_its_timeout(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_watch, "EXTERNAL_POLL", 0.05)
    start = time.monotonic()
    await store.wait_for_work("a", 0.4)  # nothing is written meanwhile: no early return
    assert time.monotonic() - start >= 0.39
    # Work this process publishes for another function does not wake "a"...
    start = time.monotonic()
    await store.publish([(Event(type="x"), ["b"])])
    await store.wait_for_work("a", 0.3)
    assert time.monotonic() - start >= 0.29
    # ...but a commit by another connection (`fnrun emit`) wakes every waiter.
    start = time.monotonic()
    other = SqliteStore(url_of(store.path))
    await other.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.wait_for_work, "a", 10.0)
            tg.start_soon(store.wait_for_work, "c", 10.0)
            await anyio.wait_all_tasks_blocked()
            await other.publish([(Event(type="x"), ["b"])])
    finally:
        await other.close()
    assert time.monotonic() - start < 5


async def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not SQLite\n" * 100)
    with pytest.raises(StoreError, match="cannot open store .*state.db"):
        await SqliteStore(url_of(tmp_path / "state.db")).open()


async def test_store_works_while_the_default_thread_pool_is_full(store: SqliteStore) -> None:
    release = threading.Event()

    async def block_a_thread() -> None:
        await anyio.to_thread.run_sync(release.wait)

    limiter = anyio.to_thread.current_default_thread_limiter()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(int(limiter.total_tokens)):
                tg.start_soon(block_a_thread)
            await anyio.wait_all_tasks_blocked()
            assert limiter.available_tokens == 0
            with anyio.fail_after(5):
                assert await store.publish([(Event(type="x"), ["a"])]) == [True]
                assert (await store.counts())["a"].pending == 1
            release.set()
    finally:
        release.set()


class Room:
    """A consumer (`Store.attach`) with room for `capacity` deliveries that records what it got."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.taken: list[Delivery] = []

    def room(self) -> int:
        return self.capacity - len(self.taken)

    def accept(self, deliveries: Sequence[Delivery]) -> None:
        self.taken += deliveries


def attach(store: SqliteStore, function: str, consumer: Room) -> Inlet:
    """Attach `consumer` as a dispatcher is after a claim that came back short."""
    inlet = store.attach(function, consumer)
    inlet.caught_up = True
    return inlet


async def test_an_attached_consumer_gets_fresh_deliveries_already_claimed(
    store: SqliteStore,
) -> None:
    room = Room(2)
    inlet = attach(store, "a", room)
    await store.publish([(Event(type="x", id="old"), ["a"])])  # takes one unit of room
    events = [Event(type="x", id=f"e{n}") for n in range(3)]
    fresh = await store.publish([(e, ["a", "b"]) for e in [*events, Event(type="x", id="old")]])
    assert fresh == [True, True, True, False]
    assert [(d.event.id, d.attempt, d.function) for d in room.taken] == [
        ("old", 1, "a"), ("e0", 1, "a"),
    ]
    assert inlet.reserved == 0 and not inlet.caught_up  # asked for 4, had room for 1
    assert (await store.counts())["a"] == Counts(pending=2, running=2)
    assert (await store.counts())["b"] == Counts(pending=3)  # "old" was not new
    # A handed delivery is a claim like any other: it finishes, or a crash recovers it.
    await store.succeed(room.taken[0], outcome(), [])
    assert await store.recover() == 1
    assert (await store.counts())["a"] == Counts(pending=3)
    claimed = await store.claim("a", 10, time.time())
    assert sorted(d.event.id for d in claimed) == ["e0", "e1", "e2"]
    assert {d.event.id: d.attempt for d in claimed}["e0"] == 2  # the handed attempt counted


async def test_deliveries_handed_to_a_consumer_that_detached_meanwhile_are_pending_again(
    store: SqliteStore,
) -> None:
    room = Room(5)
    inlet = attach(store, "a", room)
    gate = threading.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store._write, lambda conn: gate.wait(5))  # holds the writer...
            await anyio.wait_all_tasks_blocked()
            events = [(Event(type="x", id=f"e{n}"), ["a"]) for n in range(3)]
            tg.start_soon(store.publish, events)  # ...so this one is granted room, not written
            await anyio.wait_all_tasks_blocked()
            assert inlet.reserved == 3
            store.detach("a", inlet)  # the dispatcher stops before the write is visible
            gate.set()
    assert room.taken == [] and inlet.reserved == 0
    assert (await store.counts())["a"] == Counts(pending=3)
    claimed = await store.claim("a", 10, time.time())
    assert [d.attempt for d in claimed] == [1, 1, 1]  # the refused hand-off is not counted
    store.attach("a", room)  # attached, but not caught up: nothing is handed over
    await store.publish([(Event(type="x", id="e3"), ["a"])])
    assert room.taken == [] and (await store.counts())["a"] == Counts(pending=1, running=3)


async def test_checkpoints_run_on_their_own_thread_not_inside_a_commit(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    auto = await store._write(lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone())
    assert auto == (0,)  # no checkpoint inside a COMMIT
    threads: list[str] = []
    checkpoint = sqlite_checkpoint.Checkpointer._checkpoint

    def recording(self: sqlite_checkpoint.Checkpointer, conn: sqlite3.Connection) -> None:
        threads.append(threading.current_thread().name)
        checkpoint(self, conn)

    monkeypatch.setattr(sqlite_checkpoint.Checkpointer, "_checkpoint", recording)
    per_round = 100
    for _ in range(3 * sqlite_checkpoint.ROWS_PER_CHECKPOINT // per_round):
        await store.publish([(Event(type="x"), ["a"]) for _ in range(per_round)])
    with anyio.fail_after(10):
        while len(threads) < 2:
            await anyio.sleep(0.01)
    assert set(threads) == {"fnrun-checkpoint"}
    # Pages were copied back into the database file (it holds only the schema
    # until a checkpoint runs: 4 KB here without one, 1.2 MB with).
    assert store.path.stat().st_size > 200_000


async def test_the_wal_starts_over_under_steady_load(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 32 publishers never let the checkpoint thread copy the whole WAL (frames
    # land while it copies), so the WAL would never start over: it grew to
    # ~50 MB here before the writer finished the copy itself.
    monkeypatch.setattr(sqlite_checkpoint, "RESTART_FRAMES", 256)  # 1 MiB of 4 KiB pages
    wal = store.path.with_name(store.path.name + "-wal")
    largest = 0

    async def publisher() -> None:
        nonlocal largest
        for _ in range(300):
            await store.publish([(Event(type="x", data={"pad": "v" * 200}), ["a"])])
            largest = max(largest, wal.stat().st_size)

    async with anyio.create_task_group() as tg:
        for _ in range(32):
            tg.start_soon(publisher)
    assert (await store.counts())["a"] == Counts(pending=32 * 300)  # every event kept
    # It starts over soon past 1 MiB (the length is known at each checkpoint,
    # every ROWS_PER_CHECKPOINT rows): ~6 MB at most here, against ~50 MB
    # without the writer's catch-up.
    assert largest < 16 * 1024 * 1024, f"WAL grew to {largest / 1e6:.1f} MB"


async def test_claims_commit_without_fsync_and_publishes_with_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced = record_syncs(monkeypatch)
    await store.publish([(Event(type="x"), ["a"])])
    await store.claim("a", 10, time.time())
    assert len(synced) == 1
    await store.publish([(Event(type="x"), ["a"])])
    assert len(synced) == 2


async def test_a_handed_delivery_starts_before_the_fsync_and_publish_returns_after_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = Room(1)
    attach(store, "a", room)
    disk = threading.Event()
    fdatasync = sqlite_commit.os.fdatasync

    def slow_disk(fd: int) -> None:
        assert disk.wait(10)
        fdatasync(fd)

    monkeypatch.setattr(sqlite_commit.os, "fdatasync", slow_disk)
    returned = anyio.Event()

    async def publish() -> None:
        await store.publish([(Event(type="x", id="e1"), ["a"])])
        returned.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish)
            while not room.taken:  # handed over while the fsync is still held
                await anyio.sleep(0.001)
            assert not returned.is_set()  # ...and not yet acknowledged
            disk.set()
            await returned.wait()
    assert [d.event.id for d in room.taken] == ["e1"]


async def test_writes_commit_while_the_write_before_them_syncs_and_answer_after_it(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    room = Room(1)
    attach(store, "a", room)
    disk = threading.Event()
    synced: list[float] = []
    fdatasync = sqlite_commit.os.fdatasync

    def first_sync_held(fd: int) -> None:
        if not synced:
            assert disk.wait(10)
        fdatasync(fd)
        synced.append(time.monotonic())

    monkeypatch.setattr(sqlite_commit.os, "fdatasync", first_sync_held)
    finished: dict[str, float] = {}

    async def write(name: str, call: Callable[[], Awaitable[object]]) -> None:
        await call()
        finished[name] = time.monotonic()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, "earlier", lambda: store.publish([(Event(type="x"), ["b"])]))
            while (await store.counts()).get("b") != Counts(pending=1):
                await anyio.sleep(0.001)  # committed; its fsync is held
            handed = [(Event(type="x", id="e1"), ["a"])]
            tg.start_soon(write, "handed", lambda: store.publish(handed))
            while not room.taken:  # committed and handed over behind the held fsync
                await anyio.sleep(0.001)
            # A publish with no hand-off commits behind the held fsync too,
            tg.start_soon(write, "plain", lambda: store.publish([(Event(type="x"), ["c"])]))
            while (await store.counts()).get("c") != Counts(pending=1):
                await anyio.sleep(0.001)
            # and so does an outcome write...
            tg.start_soon(write, "outcome", lambda: store.record([("d", Event(type="x"),
                                                                  outcome())]))
            while [r.function for r in await store.history("d", 10)] != ["d"]:
                await anyio.sleep(0.001)
            # ...but none of them is acknowledged before the disk has it.
            await anyio.sleep(0.05)
            assert finished == {}
            disk.set()
    # Acknowledged in commit order, each after an fsync that began after its commit.
    assert finished["earlier"] <= finished["handed"] <= finished["plain"] <= finished["outcome"]
    assert len(synced) >= 2 and finished["handed"] >= synced[1]


async def test_a_failed_fsync_fails_the_publish(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_disk(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_commit.os, "fdatasync", broken_disk)
    with pytest.raises(StoreError, match="fsync failed"):
        await store.publish([(Event(type="x"), ["a"])])


async def test_a_cancelled_claim_still_returns_the_rows_it_marked(store: SqliteStore) -> None:
    await store.publish([(Event(type="x", id="e1"), ["a"])])
    got: list[list[Delivery]] = []
    gate = threading.Event()

    async def claim() -> None:
        got.append(await store.claim("a", 10, time.time()))

    with anyio.fail_after(10), anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store._write, lambda conn: gate.wait(5))  # holds one commit open...
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.publish, [(Event(type="y"), ["b"])])  # ...this one leads the next
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(claim)  # ...and the claim joins it
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            gate.set()
    assert [d.event.id for d in got[0]] == ["e1"]
    assert (await store.counts())["a"].running == 1


async def test_a_partly_handed_publish_wakes_the_function_for_the_rest(
    store: SqliteStore,
) -> None:
    room = Room(1)
    attach(store, "a", room)
    woke = anyio.Event()

    async def wait() -> None:
        await store.wait_for_work("a", 30)
        woke.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await store.publish([(Event(type="x"), ["a"]) for _ in range(3)])
            await woke.wait()  # two of three still pending: the claimer must look
    assert len(room.taken) == 1
    assert (await store.counts())["a"] == Counts(pending=2, running=1)
    # All handed over: no wake-up is needed (nothing to claim).
    attach(store, "a", Room(5))
    with anyio.move_on_after(0.5) as idle:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.wait_for_work, "a", 30)
            await anyio.wait_all_tasks_blocked()
            await store.publish([(Event(type="x"), ["a"])])
    assert idle.cancelled_caught
