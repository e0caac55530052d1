"""Group commit for the SQLite store: many writers, one connection, one fsync per batch.

Callers queue an operation; one of them (the leader) runs everything queued
in ONE transaction on a worker thread and commits (fsync'd: synchronous=FULL),
then wakes the others with their own result or error. Publishes in a batch
are merged into a few multi-row statements, because with one event per call
the per-statement cost, not the fsync, is what bounds durable ingress.

A batch of only non-durable operations (claims, releases, recovery and sync
calls' history, which acknowledge nothing to anyone) commits without the
fsync (synchronous=NORMAL).
A WAL is replayed in order, so the next durable commit's fsync covers it too;
a crash of the process loses nothing either way (the OS has the write), and
a power loss can at worst undo a claim, which then runs again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import anyio

from runtime.errors import StoreError
from runtime.events import Event
from runtime.store.base import Targets

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]

MAX_BATCH = 1000
"""Most operations per transaction: bounds one commit's latency."""
BUSY_TIMEOUT_MS = 10_000

Row = tuple[str, str, float, str, Targets]
"""An event ready to store: id, type, time, JSON envelope, targets."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with durable commits, patient with other processes' locks."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise StoreError(f"{path}: cannot switch SQLite to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def rows_of(items: Sequence[tuple[Event, Targets]]) -> list[Row]:
    """Serialise events in the caller, off the writer thread's critical path."""
    return [
        (e.id, e.type, e.time.timestamp(), json.dumps(e.to_dict(), separators=(",", ":")), t)
        for e, t in items
    ]


class Inserted(NamedTuple):
    fresh: list[bool]
    """Per row, whether its event was new."""
    handed: list[tuple[int, str, int]]
    """Deliveries stored already claimed, for a consumer: row index, function, delivery id."""


def insert_events(
    conn: sqlite3.Connection, rows: Sequence[Row], now: float,
    grants: Mapping[str, int] | None = None,
) -> Inserted:
    """Store new events and one delivery per target.

    Deliveries are pending, except up to `grants[function]` of a function's,
    which are stored claimed (running, attempt 1) for a local consumer
    (`Store.attach`).
    """
    ids = json.dumps([row[0] for row in rows])
    seen = {
        found
        for (found,) in conn.execute(
            "SELECT id FROM events WHERE id IN (SELECT value FROM json_each(?))", (ids,)
        )
    }
    left = dict(grants or {})
    fresh, events, pending, claimed, claimed_at = [], [], [], [], []
    for index, (event_id, kind, at, body, targets) in enumerate(rows):
        is_new = event_id not in seen
        fresh.append(is_new)
        if not is_new:
            continue
        seen.add(event_id)
        events.append((event_id, kind, at, body, now))
        for fn in dict.fromkeys(targets):
            if left.get(fn, 0) > 0:
                left[fn] -= 1
                claimed.append((event_id, fn, now, now))
                claimed_at.append((index, fn))
            else:
                pending.append((event_id, fn, now, now))
    conn.executemany(
        "INSERT INTO events (id, type, time, body, stored_at) VALUES (?, ?, ?, ?, ?)", events
    )
    handed = _insert_claimed(conn, claimed, claimed_at)
    conn.executemany(
        "INSERT INTO deliveries (event_id, function, state, due, updated)"
        " VALUES (?, ?, 'pending', ?, ?)",
        pending,
    )
    return Inserted(fresh, handed)


def _insert_claimed(
    conn: sqlite3.Connection, claimed: list[tuple[str, str, float, float]],
    claimed_at: list[tuple[int, str]],
) -> list[tuple[int, str, int]]:
    if not claimed:
        return []
    # AUTOINCREMENT ids only grow, and this transaction holds the file's write
    # lock: the new rows are exactly those above the current maximum, in order.
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()
    conn.executemany(
        "INSERT INTO deliveries (event_id, function, state, attempts, due, updated)"
        " VALUES (?, ?, 'running', 1, ?, ?)",
        claimed,
    )
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM deliveries WHERE id > ? ORDER BY id", (top,))]
    if len(ids) != len(claimed):
        raise StoreError(f"stored {len(claimed)} claimed deliveries, found {len(ids)}")
    return [(index, fn, row_id) for (index, fn), row_id in zip(claimed_at, ids, strict=True)]


@dataclass(eq=False)
class Op:
    """One queued write: `work`, or for a publish, the `rows` to merge with others."""

    work: Work[Any]
    rows: Sequence[Row] | None = None
    grants: Mapping[str, int] = field(default_factory=dict)
    durable: bool = True
    """Whether its commit must reach the disk before it returns (see `GroupCommit`)."""
    result: Any = None
    error: BaseException | None = None


class Batch:
    """Operations committed in one transaction; the task that queued the first one leads it."""

    __slots__ = ("ops", "done", "after")

    def __init__(self, after: Batch | None) -> None:
        self.ops: list[Op] = []
        self.done = anyio.Event()
        """Set once the batch is committed (or failed): one wake-up for all its callers."""
        self.after = after
        """The batch before it, which must commit first."""


class GroupCommit:
    """Runs queued write operations, many per transaction, on one connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._open: Batch | None = None
        """The batch new operations join; it closes when its leader starts committing."""
        self._last: Batch | None = None
        self._thread: anyio.CapacityLimiter | None = None
        self._durable = True

    async def submit(self, work: Work[T], *, durable: bool = True) -> T:
        """Run `work(conn)` inside the next committed transaction; return its result."""
        return await self._submit(Op(work, durable=durable))  # type: ignore[no-any-return]

    async def publish(self, rows: Sequence[Row], grants: Mapping[str, int]) -> Inserted:
        """Store events and deliveries in the next commit (see `insert_events`)."""
        op = Op(lambda conn: insert_events(conn, rows, time.time(), grants), rows, grants)
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
        try:
            if batch.after is not None:
                await batch.after.done.wait()  # operations queued meanwhile join this batch
                batch.after = None
            if self._open is batch:
                self._open = None
            # Its own thread token: blocking calls elsewhere that fill anyio's
            # default pool of 40 threads must never stall durable writes.
            self._thread = self._thread or anyio.CapacityLimiter(1)
            await anyio.to_thread.run_sync(self._commit, batch.ops, limiter=self._thread)
        finally:
            batch.done.set()

    def _commit(self, batch: list[Op]) -> None:
        conn = self._conn
        try:
            # Savepoints double the cost of a write, so try the batch without
            # them first; only a batch with a failing op runs again, isolated.
            if not self._run(batch, isolate=False):
                self._run(batch, isolate=True)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in batch:
                op.result, op.error = None, StoreError(f"SQLite write failed: {exc}")

    def _run(self, batch: list[Op], isolate: bool) -> bool:
        """One transaction over `batch`; False (rolled back) if an op failed un-isolated."""
        conn = self._conn
        durable = any(op.durable for op in batch)
        if durable != self._durable:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
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
        grants: Counter[str] = Counter()
        for op in publishes:
            grants.update(op.grants)
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
