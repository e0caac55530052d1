"""Group commit for the SQLite store: many writers, one connection, one fsync per batch.

Callers queue an operation on the event loop. A writer thread runs everything
queued in ONE transaction, commits, and hands the batch to a sync thread,
which fsyncs the WAL and wakes the batch's callers with their own result or
error. Publishes in a batch are merged into a few multi-row statements,
because with one event per call the per-statement cost, not the fsync, is
what bounds durable ingress.

The writer takes the next batch as soon as it has committed the last one,
while the sync thread works: no event-loop turn sits between two commits,
and one fsync covers every commit made before it began. (Led from the event
loop, each commit waited for the loop to notice the previous one and for a
pool thread to pick it up: 5-10% of the async webhook's rate, measured in
alternated runs.)

The connection runs with synchronous=NORMAL and the fsync is ours: one
`fdatasync` of the WAL file after the COMMIT, which is what synchronous=FULL
does in WAL mode. Doing it ourselves splits the commit in two moments:

- *visible*: the transaction is in the WAL (the OS has it, so a crash of the
  process loses nothing). A publish's hand-off (`Op.visible`) starts its
  deliveries here, so a handler does not wait for the disk;
- *durable*: after the fsync. Only now is anything acknowledged.

A handler may thus start on an event that a power loss then undoes; its
producer was never acknowledged and sends it again, so this is one more
at-least-once repeat, never a loss. A batch of only non-durable operations
(claims, releases, recovery and sync calls' history, which acknowledge
nothing to anyone) needs no fsync of its own: a WAL is replayed in order, so
the next durable commit's fsync covers it too, and a power loss can at worst
undo a claim, which then runs again. Every batch is still answered in commit
order, after any durable batch before it is synced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio

from runtime.errors import StoreError, StoreUnavailable
from runtime.store.sqlite_checkpoint import ROWS_PER_CHECKPOINT, WAL_SIZE_LIMIT, Checkpointer
from runtime.store.sqlite_rows import Inserted, Row, insert_events

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]
RowsWriter = Callable[[sqlite3.Connection, Sequence[Any]], None]
"""Writes a list of rows at once; called once per batch with every caller's rows."""
Writes = Sequence[tuple[RowsWriter, Sequence[Any]]]

MAX_BATCH = 1000
"""Most operations per transaction: bounds one commit's latency."""
LINGER = 0.005
"""Seconds a lingering write (`write_rows(linger=True)`) may wait for a batch
that commits anyway. Outcome writes linger: under load, a transaction of only
outcomes waited ~1.3 ms per statement for the busy event loop to let go of the
interpreter lock, and a publish queued behind it waited as long."""
BUSY_TIMEOUT_MS = 10_000
UNAVAILABLE = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
})
"""Primary result codes of a file that is locked by another process or whose disk
fails, as opposed to a statement that is wrong: the same write may succeed later."""


def store_error(what: str, exc: sqlite3.Error | OSError) -> StoreError:
    """`exc` as fnrun's error, a `StoreUnavailable` if trying again later may succeed."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError) or (code is not None and code & 0xFF in UNAVAILABLE):
        return StoreUnavailable(f"SQLite {what} failed: {exc}")
    return StoreError(f"SQLite {what} failed: {exc}")


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with durable commits, patient with other processes' locks."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"{path}: cannot switch SQLite to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=NORMAL")  # the fsync is GroupCommit's (see above)
    conn.execute("PRAGMA wal_autocheckpoint=0")  # and the checkpoints are Checkpointer's
    conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


@dataclass(eq=False)
class Op:
    """One queued write: `work`, or for a publish, the `rows` to merge with others."""

    work: Work[Any]
    rows: Sequence[Row] | None = None
    grants: Mapping[str, int] = field(default_factory=dict)
    durable: bool = True
    """Whether its commit must reach the disk before it returns (see `GroupCommit`)."""
    visible: Callable[[Any], None] | None = None
    """Called with the result on the event loop once the commit is visible, before the fsync."""
    writes: Writes | None = None
    """For `write_rows`: its rows, to merge with other callers' for the same writer."""
    linger: bool = False
    """Whether it may wait up to `LINGER` for other operations to commit with."""
    result: Any = None
    error: BaseException | None = None


class Batch:
    """Operations committed in one transaction."""

    __slots__ = ("ops", "due", "taken", "done", "number", "durable")

    def __init__(self, due: float) -> None:
        self.ops: list[Op] = []
        self.due = due
        """When the writer takes it at the latest (time.monotonic); 0 for at once."""
        self.taken = False
        """Set (under the queue's lock) once the writer took it: nothing joins it after."""
        self.done = anyio.Event()
        """Set on the event loop once the batch is durable (or failed): one wake-up
        for all its callers."""
        self.number = 0
        """Its transaction's number, counted from 1 (see `GroupCommit._sync`)."""
        self.durable = False


class GroupCommit:
    """Runs queued write operations, many per transaction, on one connection.

    Two threads of its own, so that blocking calls elsewhere that fill
    anyio's default pool of 40 threads never stall durable writes: a writer
    (transactions, in queue order) and a syncer (fsyncs, then wake-ups, in
    the same order), so a batch commits while the one before it syncs.
    """

    def __init__(self, conn: sqlite3.Connection, wal: Path, checkpointer: Checkpointer) -> None:
        self._conn = conn
        self._wal = wal
        self._checkpointer = checkpointer
        self._rows_checkpointed = conn.total_changes
        self._wal_fd: int | None = None
        self._commits = 0
        """Transactions committed so far; the writer numbers them."""
        self._synced = 0
        """The last transaction that an fsync is known to cover."""
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: collections.deque[Batch] = collections.deque()
        self._open: Batch | None = None
        """The batch new operations join, until the writer takes it."""
        self._committed: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._stop: Batch | None = None
        """Queued by `close`: the threads finish what is before it, then end."""

    def close(self) -> None:
        """End the threads and close the WAL descriptor; call once the last batch is done."""
        with self._lock:
            self._stop = Batch(due=0.0)
            self._queue.append(self._stop)
            self._queued.notify()
        for thread in self._threads:
            thread.join()
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None

    async def submit(self, work: Work[T], *, durable: bool = True) -> T:
        """Run `work(conn)` inside the next committed transaction; return its result."""
        return await self._submit(Op(work, durable=durable))  # type: ignore[no-any-return]

    async def publish(
        self, rows: Sequence[Row], grants: Mapping[str, int],
        visible: Callable[[Inserted], None] | None = None,
    ) -> Inserted:
        """Store events and deliveries in the next commit (see `insert_events`).

        `visible(inserted)` runs as soon as the commit is visible, before the
        fsync that this call waits for (see the module's docstring).
        """
        op = Op(lambda conn: insert_events(conn, rows, time.time(), grants), rows, grants,
                visible=visible)
        return await self._submit(op)  # type: ignore[no-any-return]

    async def write_rows(
        self, writes: Writes, *, durable: bool = True, linger: bool = False
    ) -> None:
        """Run each `(writer, rows)` in the next commit, merged with other callers'.

        A batch calls each distinct writer once, with the rows of all its
        callers: under load a commit carried a dozen settlers' writes of a
        few outcomes each. So the writes of different callers must not
        depend on each other's order. With `linger`, the commit may wait up
        to `LINGER` for other operations.
        """
        def work(conn: sqlite3.Connection) -> None:
            for writer, rows in writes:
                writer(conn, rows)

        await self._submit(Op(work, durable=durable, writes=writes, linger=linger))

    async def _submit(self, op: Op) -> Any:
        if self._loop is None:
            self._start()
        due = time.monotonic() + LINGER if op.linger else 0.0
        with self._lock:
            batch = self._open
            if batch is None or batch.taken or len(batch.ops) >= MAX_BATCH:
                batch = self._open = Batch(due)
                self._queue.append(batch)
                self._queued.notify()
            elif due < batch.due:
                batch.due = due
                self._queued.notify()
            batch.ops.append(op)
        # Once queued, the write happens: its caller sees it through even if
        # cancelled, so that a claim's marked rows always reach the claimer.
        try:
            await batch.done.wait()
        except anyio.get_cancelled_exc_class():
            # As a shield would: finish, return the result, and let anyio
            # deliver the cancellation again at the caller's next checkpoint.
            with anyio.CancelScope(shield=True):
                await batch.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._write_loop, name="fnrun-sqlite-write", daemon=True),
            threading.Thread(target=self._sync_loop, name="fnrun-sqlite-sync", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _write_loop(self) -> None:
        """The writer thread: each batch queued, in one transaction, then to the syncer."""
        while True:
            with self._lock:
                while True:
                    if not self._queue:
                        self._queued.wait()
                        continue
                    batch = self._queue[0]
                    wait = batch.due - time.monotonic() if batch.due else 0.0
                    if wait <= 0 or len(self._queue) > 1 or len(batch.ops) >= MAX_BATCH:
                        break
                    self._queued.wait(wait)
                batch = self._queue.popleft()
                batch.taken = True
            stop = batch is self._stop
            if not stop:
                self._commit(batch)
            self._committed.put(batch)
            if stop:
                return

    def _sync_loop(self) -> None:
        """The sync thread: one fsync for every batch committed since the last, then
        their callers' wake-up, in commit order."""
        while True:
            batches = [self._committed.get()]
            while not self._committed.empty():
                batches.append(self._committed.get_nowait())
            stop = batches[-1] is self._stop
            if stop:
                batches.pop()
            durable = [batch for batch in batches if batch.durable]
            if durable:
                try:
                    self._sync(durable[-1].number)
                except Exception as exc:  # noqa: BLE001 - OSError, or a bug: each caller raises it
                    error = store_error("WAL fsync", exc) if isinstance(exc, OSError) else exc
                    for op in (op for batch in durable for op in batch.ops):
                        op.result, op.error = None, error
            if batches:
                self._on_loop(_done, batches)
            if stop:
                return

    def _on_loop(self, callback: Callable[[Any], None], arg: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the loop is closed: no caller is left to wake
            pass

    def _commit(self, batch: Batch) -> None:
        """On the writer thread: the batch's transaction; never raises."""
        ops, conn = batch.ops, self._conn
        try:
            if self._checkpointer.due:
                self._checkpointer.catch_up(conn)
            # Savepoints double the cost of a write, so try the batch without
            # them first; only a batch with a failing op runs again, isolated.
            if not self._run(ops, isolate=False):
                self._run(ops, isolate=True)
        except Exception as exc:  # noqa: BLE001 - sqlite3.Error, or a bug: each caller raises it
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            error = store_error("write", exc) if isinstance(exc, sqlite3.Error) else exc
            for op in ops:  # an error each: each caller raises its own
                op.result, op.error = None, error
            return
        finally:
            self._commits += 1
            batch.number = self._commits
            batch.durable = any(op.durable for op in ops)
            if conn.total_changes - self._rows_checkpointed >= ROWS_PER_CHECKPOINT:
                self._rows_checkpointed = conn.total_changes
                self._checkpointer.poke()
            shown = [(op, op.result) for op in ops if op.visible is not None and op.error is None]
            if shown:  # each wake-up of the loop costs
                self._on_loop(_visible, shown)

    def _sync(self, number: int) -> None:
        """Return once an fsync that began after transaction `number` committed is done.

        It covers every transaction committed before it began.
        """
        if self._synced >= number:
            return
        covered = self._commits
        if self._wal_fd is None:
            # Opened after the first commit created the WAL. It stays the same
            # file while this connection is open: SQLite deletes a WAL only
            # when the last connection to the database closes.
            self._wal_fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._wal_fd)
        self._synced = covered

    def _run(self, batch: list[Op], isolate: bool) -> bool:
        """One transaction over `batch`; False (rolled back) if an op failed un-isolated."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not isolate:
                batch = self._merge(batch)
            for op in batch:
                self._run_one(op, isolate)
        except Exception:
            if isolate:
                raise
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return False
        conn.execute("COMMIT")
        return True

    def _merge(self, batch: list[Op]) -> list[Op]:
        """Run every publish of the batch as one insert, and each `write_rows`
        writer once for all callers; return the other ops."""
        publishes = [op for op in batch if op.rows is not None]
        rows = [row for op in publishes for row in op.rows or ()]
        grants: dict[str, int] = {}
        for op in publishes:  # plain dicts: Counter.update cost 4x as much here
            for function, count in op.grants.items():
                grants[function] = grants.get(function, 0) + count
        inserted = insert_events(self._conn, rows, time.time(), grants)
        handed = iter(inserted.handed)  # in row order
        pending_hand = next(handed, None)
        start = 0
        for op in publishes:
            end = start + len(op.rows or ())
            mine = []
            while pending_hand is not None and pending_hand[0] < end:
                index, fn, delivery = pending_hand
                mine.append((index - start, fn, delivery))
                pending_hand = next(handed, None)
            op.result, op.error = Inserted(inserted.fresh[start:end], mine), None
            start = end
        merged: dict[RowsWriter, list[Any]] = {}
        for op in batch:
            if op.writes is not None:
                for writer, own in op.writes:
                    merged.setdefault(writer, []).extend(own)
                op.result, op.error = None, None
        for writer, all_rows in merged.items():
            writer(self._conn, all_rows)
        return [op for op in batch if op.rows is None and op.writes is None]

    def _run_one(self, op: Op, isolate: bool) -> None:
        if not isolate:
            op.result, op.error = op.work(self._conn), None
            return
        self._conn.execute("SAVEPOINT op")
        try:
            op.result, op.error = op.work(self._conn), None
        except Exception as exc:  # noqa: BLE001 - one bad op must not fail the batch; its caller raises it
            self._conn.execute("ROLLBACK TO op")
            op.result = None
            op.error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
        self._conn.execute("RELEASE op")


def _visible(shown: list[tuple[Op, Any]]) -> None:
    """On the event loop: a commit is visible, so its hand-offs may start."""
    for op, result in shown:
        assert op.visible is not None
        op.visible(result)


def _done(batches: list[Batch]) -> None:
    """On the event loop: wake the callers of batches that are durable (or failed)."""
    for batch in batches:
        batch.done.set()
