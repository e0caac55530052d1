"""Group commit for the SQLite store: many writers, one connection, one fsync per batch.

Callers queue an operation; one of them (the leader) runs everything queued
in ONE transaction on a worker thread, commits, fsyncs the WAL, then wakes
the others with their own result or error. Publishes in a batch are merged
into a few multi-row statements, because with one event per call the
per-statement cost, not the fsync, is what bounds durable ingress.

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
nothing to anyone) skips the fsync: a WAL is replayed in order, so the next
durable commit's fsync covers it too, and a power loss can at worst undo a
claim, which then runs again.
"""

from __future__ import annotations

import asyncio
import os
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

MAX_BATCH = 1000
"""Most operations per transaction: bounds one commit's latency."""
SYNC_WAITERS = 3
"""Batches that may wait for an fsync while the next one commits."""
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
    result: Any = None
    error: BaseException | None = None


class Batch:
    """Operations committed in one transaction; the task that queued the first one leads it."""

    __slots__ = ("ops", "committed", "watched", "done", "after")

    def __init__(self, after: Batch | None) -> None:
        self.ops: list[Op] = []
        self.committed = anyio.Event()
        """Set once its transaction is over (the connection is free), before any fsync."""
        self.watched = False
        """Whether the next batch waits on `committed` (else it is set only with `done`)."""
        self.done = anyio.Event()
        """Set once the batch is durable (or failed): one wake-up for all its callers."""
        self.after = after
        """The batch before it, which must commit first."""


class GroupCommit:
    """Runs queued write operations, many per transaction, on one connection.

    Commits are pipelined with fsyncs: a batch commits as soon as the one
    before it has committed, while that one's fsync is still running (two
    threads: one writing, one syncing). A batch is done only after the one
    before it, so acknowledgements keep commit order.
    """

    def __init__(self, conn: sqlite3.Connection, wal: Path, checkpointer: Checkpointer) -> None:
        self._conn = conn
        self._wal = wal
        self._checkpointer = checkpointer
        self._rows_checkpointed = conn.total_changes
        self._wal_fd: int | None = None
        self._wal_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._commits = 0
        """Transactions committed so far; the one running numbers them (see `_sync`)."""
        self._synced = 0
        """The last transaction that an fsync is known to cover."""
        self._open: Batch | None = None
        """The batch new operations join; it closes when its leader starts committing."""
        self._last: Batch | None = None
        self._threads: anyio.CapacityLimiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Close the WAL descriptor; call once the last batch is done."""
        with self._wal_lock:
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

    async def _submit(self, op: Op) -> Any:
        batch = self._open
        leads = batch is None or len(batch.ops) >= MAX_BATCH
        if leads:
            batch = self._open = self._last = Batch(after=self._last)
        assert batch is not None
        batch.ops.append(op)
        # Once queued, the write happens: its caller sees it through even if
        # cancelled, so that every batch is led and a claim's marked rows
        # always reach the claimer. A shield per batch, not per operation:
        # anyio's cancel scopes were a tenth of a publish's CPU.
        if leads:
            with anyio.CancelScope(shield=True):
                await self._lead(batch)
        else:
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

    async def _lead(self, batch: Batch) -> None:
        after = batch.after
        batch.after = None
        try:
            if after is not None:
                # Operations queued meanwhile join this batch. A batch that
                # publishes (a producer waits on it; it may hand deliveries
                # over) commits as soon as the one before it has, while that
                # one syncs; others (claims, outcomes) also wait out its
                # fsync, which groups more of them per commit.
                after.watched = True  # if the thread misses it, `done` sets it later
                await after.committed.wait()
                if not any(op.rows is not None for op in batch.ops):
                    await after.done.wait()
            if self._open is batch:
                self._open = None
            # Own thread tokens: blocking calls elsewhere that fill anyio's
            # default pool of 40 threads must never stall durable writes. More
            # than one: this batch commits while those before it wait on a sync.
            self._threads = self._threads or anyio.CapacityLimiter(SYNC_WAITERS + 1)
            self._loop = self._loop or asyncio.get_running_loop()
            await anyio.to_thread.run_sync(self._commit, batch, limiter=self._threads)
            if after is not None:
                await after.done.wait()
        finally:
            batch.committed.set()
            batch.done.set()

    def _commit(self, batch: Batch) -> None:
        """On a thread: the transaction, then (for a durable batch) the fsync."""
        ops, conn = batch.ops, self._conn
        if self._checkpointer.due:
            self._checkpointer.catch_up(conn)
        try:
            # Savepoints double the cost of a write, so try the batch without
            # them first; only a batch with a failing op runs again, isolated.
            if not self._run(ops, isolate=False):
                self._run(ops, isolate=True)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in ops:  # an error each: each caller raises its own
                op.result, op.error = None, store_error("write", exc)
            return
        finally:
            self._commits += 1
            number = self._commits
            if conn.total_changes - self._rows_checkpointed >= ROWS_PER_CHECKPOINT:
                self._rows_checkpointed = conn.total_changes
                self._checkpointer.poke()
            # From here on this thread leaves the connection to the next batch.
            assert self._loop is not None
            shown = [(op, op.result) for op in ops if op.visible is not None and op.error is None]
            if shown or batch.watched:  # each wake-up of the loop costs
                self._loop.call_soon_threadsafe(_committed, batch, shown)
        if any(op.durable for op in ops):
            try:
                self._sync(number)
            except OSError as exc:
                for op in ops:
                    op.result, op.error = None, store_error("WAL fsync", exc)

    def _sync(self, number: int) -> None:
        """Return once an fsync that began after transaction `number` committed is done.

        One fsync at a time, and it covers every transaction committed before
        it began: batches that committed while one ran share the next one.
        """
        with self._sync_lock:
            if self._synced >= number:
                return
            covered = self._commits
            os.fdatasync(self._wal_file())
            self._synced = covered

    def _wal_file(self) -> int:
        """A descriptor of the WAL file, opened after the first commit created it.

        It stays the same file while this connection is open: SQLite deletes
        a WAL only when the last connection to the database closes.
        """
        with self._wal_lock:
            if self._wal_fd is None:
                self._wal_fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
            return self._wal_fd

    def _run(self, batch: list[Op], isolate: bool) -> bool:
        """One transaction over `batch`; False (rolled back) if an op failed un-isolated."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not isolate:
                batch = self._merge_publishes(batch)
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

    def _merge_publishes(self, batch: list[Op]) -> list[Op]:
        """Run every publish of the batch as one insert; return the other ops."""
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
        return [op for op in batch if op.rows is None]

    def _run_one(self, op: Op, isolate: bool) -> None:
        if not isolate:
            op.result, op.error = op.work(self._conn), None
            return
        self._conn.execute("SAVEPOINT op")
        try:
            op.result, op.error = op.work(self._conn), None
        except Exception as exc:  # one bad op must not fail the batch
            self._conn.execute("ROLLBACK TO op")
            op.result = None
            op.error = exc if isinstance(exc, StoreError) else StoreError(str(exc))
        self._conn.execute("RELEASE op")


def _committed(batch: Batch, shown: list[tuple[Op, Any]]) -> None:
    """On the event loop: the next batch may commit; hand-offs may start."""
    batch.committed.set()
    for op, result in shown:
        assert op.visible is not None
        op.visible(result)
