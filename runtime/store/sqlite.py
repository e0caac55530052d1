"""The SQLite store: one WAL file per project, durable commits, group commit.

All writes go through one connection and `GroupCommit` (sqlite_commit.py):
one fsync per batch of concurrent writes instead of one per write is what
makes durable ingress fast. Reads use a second connection; WAL lets them run
beside the writer, and `busy_timeout` lets `fnrun emit` write from another
process. Events become rows in `sqlite_rows`; the rarely run writes (replay,
retention, schedule ticks, idempotency) live in `sqlite_upkeep`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio

from runtime.errors import StoreError
from runtime.events import JSON, Event, Outcome
from runtime.flow.rules import FlowRules
from runtime.store import sqlite_upkeep as upkeep
from runtime.store.base import (
    Call,
    Counts,
    DeadLetter,
    Delivery,
    Store,
    Success,
    Targets,
)
from runtime.store.envelope import StoredEvent
from runtime.store.runs import MAX_ERROR, MAX_TRACEBACK, RunRecord, clip
from runtime.store.sqlite_checkpoint import Checkpointer
from runtime.store.sqlite_commit import (
    BUSY_TIMEOUT_MS,
    GroupCommit,
    Work,
    Writes,
    connect,
    store_error,
)
from runtime.store.sqlite_flow import SqliteFlow
from runtime.store.sqlite_lock import SupervisorLock
from runtime.store.sqlite_rows import BODIES, delete_ids, insert_all, rows_of
from runtime.store.sqlite_runs import (
    RUN_BY_INVOCATION,
    TOPIC_FUNCTION,
    runs_for_events_query,
    runs_query,
)
from runtime.store.sqlite_schema import (
    CLAIM,
    DEAD_FILTER,
    HISTORY_INSERT,
    MAX_RESULT,
    PLAIN_HEAD,
    create_schema,
    finish,
    history_row,
    id_list,
    insert_history,
    is_plain,
    path_of,
    plain_row,
    run_record,
)
from runtime.store.sqlite_watch import ExternalCommits
from runtime.topics import matches

T = TypeVar("T")
HISTORY_HEAD = HISTORY_INSERT.partition(" VALUES")[0]


def add_history(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    insert_all(conn, HISTORY_HEAD, rows)


def add_plain_history(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    insert_all(conn, PLAIN_HEAD, rows)


def finish_plain(conn: sqlite3.Connection, ids: Sequence[tuple[Any]]) -> None:
    """Successes without emits end their deliveries (unless dead-lettered meanwhile)."""
    delete_ids(conn, "DELETE FROM deliveries WHERE state != 'dead' AND id IN", ids)


__all__ = ["MAX_ERROR", "MAX_RESULT", "MAX_TRACEBACK", "SqliteStore", "path_of"]

class SqliteStore(Store):
    """A `Store` on one SQLite file, shared by one supervisor and any `fnrun` commands."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = path_of(url)
        self._writer: GroupCommit | None = None
        self._checkpointer: Checkpointer | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = anyio.Lock()
        self._read_thread: anyio.CapacityLimiter | None = None
        self._external = ExternalCommits(self, self._data_version)
        self._owner = SupervisorLock(self.path)

    def flow(self, function: str, rules: FlowRules) -> SqliteFlow:
        return SqliteFlow(self, function, rules)

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_conn = connect(self.path)
            create_schema(self._write_conn)
            # Other processes' commits from now on wake the dispatchers (sqlite_watch).
            self._external.seen = self._write_conn.execute("PRAGMA data_version").fetchone()[0]
            self._read_conn = connect(self.path)
            self._read_conn.create_function(TOPIC_FUNCTION, 2, matches, deterministic=True)
        except (OSError, sqlite3.Error, StoreError) as exc:
            if self._write_conn is not None:
                self._write_conn.close()
                self._write_conn = None
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        self._checkpointer = Checkpointer(self.path, BUSY_TIMEOUT_MS)
        self._writer = GroupCommit(
            self._write_conn, self.path.with_name(self.path.name + "-wal"), self._checkpointer
        )

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.submit(lambda conn: None)  # waits out queued writes
            self._writer.close()
            self._writer = None
        self._owner.release()
        if self._checkpointer is not None:
            await anyio.to_thread.run_sync(self._checkpointer.close)
            self._checkpointer = None
        async with self._read_lock:
            for conn in (self._write_conn, self._read_conn):
                if conn is not None:
                    conn.close()
            self._write_conn = self._read_conn = None

    async def _write(self, work: Work[T], *, durable: bool = True) -> T:
        if self._writer is None:
            raise StoreError(f"store {self.path} is not open")
        return await self._writer.submit(work, durable=durable)

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._read_lock:
            conn = self._read_conn
            if conn is None:
                raise StoreError(f"store {self.path} is not open")
            # Own thread token, as for writes: a full default pool must not stall reads.
            self._read_thread = self._read_thread or anyio.CapacityLimiter(1)
            try:
                return await anyio.to_thread.run_sync(
                    lambda: conn.execute(sql, params).fetchall(), limiter=self._read_thread
                )
            except sqlite3.Error as exc:
                raise store_error("read", exc) from exc

    def _notify_all(self, functions: set[str]) -> None:
        for function in functions:
            self.notify(function)

    # -- ingress and delivery ----------------------------------------------

    async def publish(self, items: Sequence[tuple[Event, Targets]]) -> list[bool]:
        items = list(items)
        if self._writer is None:
            raise StoreError(f"store {self.path} is not open")
        grant = self.handoff.grant(items)
        try:
            # Handed over when the commit is visible, before the fsync (see
            # sqlite_commit): handlers need not wait for the disk, only the
            # producer's acknowledgement does.
            inserted = await self._writer.publish(rows_of(items), grant.counts, grant.hand_over)
        except BaseException:
            grant.cancel()  # unless the commit was seen: then nothing is held
            raise
        finally:
            if grant.refused:
                with anyio.CancelScope(shield=True):
                    await self.release(grant.refused)
        self.outage.recovered()
        return inserted.fresh

    async def claim(self, function: str, limit: int, now: float) -> list[Delivery]:
        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            claimed = conn.execute(CLAIM, (time.time(), function, now, limit)).fetchall()
            # Bodies by primary key in one statement: a subquery inside
            # RETURNING is planned as a full scan of events (SQLite 3.40).
            ids = json.dumps([row[3] for row in claimed])
            bodies = dict(conn.execute(BODIES, (ids,)).fetchall())
            return [(*row[:3], bodies[row[3]]) for row in claimed]

        # Not durable: a claim acknowledges nothing (see sqlite_commit). Retries
        # (counted attempts past 1) first, as CLAIM chose them, then by due time.
        rows = sorted(await self._write(work, durable=False),
                      key=lambda row: (row[2] == 1, row[1], row[0]))
        return [
            Delivery(str(row_id), function, StoredEvent.of(json.loads(body)), attempts)
            for row_id, _, attempts, body in rows
        ]

    async def next_due(self, function: str) -> float | None:
        rows = await self._read(
            "SELECT min(due) FROM deliveries WHERE function = ? AND state = 'pending'",
            (function,),
        )
        return rows[0][0]  # type: ignore[no-any-return]

    async def succeed(
        self, delivery: Delivery, outcome: Outcome, emits: Sequence[tuple[Event, Targets]]
    ) -> None:
        emits = list(emits)
        rows = rows_of(emits)

        def work(conn: sqlite3.Connection) -> set[str]:
            insert_history(conn, delivery, outcome)
            return finish(conn, delivery, emits, rows)

        self._notify_all(await self._write(work))

    async def succeed_many(self, items: Sequence[Success], *, also: Writes = ()) -> None:
        """Settle successes in one write; `also` joins it, after the deliveries ended
        (the flow part's rows, which must end with them)."""
        # One write for the lot: the history rows and plain completions go in
        # two statements; only deliveries with emits need one of their own.
        quiet: list[tuple[Any, ...]] = []
        history: list[tuple[Any, ...]] = []
        for d, o, _ in items:
            if is_plain(o):
                quiet.append(plain_row(d.event, d.function, d.attempt, o))
            else:
                history.append(history_row(d.event, d.function, d.attempt, o))
        plain = [(d.id,) for d, _, emits in items if not emits]
        emitting = [(d, list(e), rows_of(list(e))) for d, _, e in items if e]
        if not emitting:  # nothing to wake: merged with other settlers' writes
            if self._writer is None:
                raise StoreError(f"store {self.path} is not open")
            await self._writer.write_rows(
                ((add_plain_history, quiet), (add_history, history), (finish_plain, plain), *also),
                linger=True,
            )
            return

        def work(conn: sqlite3.Connection) -> set[str]:
            add_plain_history(conn, quiet)
            add_history(conn, history)
            finish_plain(conn, plain)
            woken: set[str] = set()
            for delivery, emits, rows in emitting:
                woken |= finish(conn, delivery, emits, rows)
            for writer, own in also:
                writer(conn, own)
            return woken

        self._notify_all(await self._write(work))

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            insert_history(conn, delivery, outcome)
            now = time.time()
            conn.execute(
                "UPDATE deliveries SET state = ?, due = ?, updated = ?, error = ?, traceback = ?"
                " WHERE id = ?",
                (
                    "dead" if retry_at is None else "pending",
                    now if retry_at is None else retry_at,
                    now,
                    clip(outcome.error, MAX_ERROR),
                    clip(outcome.traceback, MAX_TRACEBACK, keep_tail=True),
                    delivery.id,
                ),
            )

        await self._write(work)
        if retry_at is not None:
            self.notify(delivery.function)

    async def record(self, calls: Sequence[Call]) -> None:
        rows = [history_row(event, function, 1, outcome) for function, event, outcome in calls]
        await self._write(lambda conn: conn.executemany(HISTORY_INSERT, rows), durable=False)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        ids = id_list([d.id for d in deliveries])
        await self._write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = max(attempts - 1, 0),"
                " due = ?1, updated = ?1"
                " WHERE state = 'running' AND id IN (SELECT value FROM json_each(?2))",
                (time.time(), ids),
            ),
            durable=False,
        )
        self._notify_all({d.function for d in deliveries})

    async def recover(self) -> int:
        """Become the file's one supervisor, then make every running delivery pending.

        Raises:
            StoreError: another supervisor runs on this file (see `sqlite_lock`).
        """
        # Held for the store's life: with it, every running row is an orphan
        # of a dead supervisor; its attempt was counted by claim and stays counted.
        await anyio.to_thread.run_sync(self._owner.acquire)
        rows: list[tuple[str]] = await self._write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET state = 'pending', due = ?1, updated = ?1"
                " WHERE state = 'running' RETURNING function",
                (time.time(),),
            ).fetchall(),
            durable=False,
        )
        self._notify_all({row[0] for row in rows})
        return len(rows)

    # -- inspection and operations -----------------------------------------

    async def counts(self) -> dict[str, Counts]:
        rows = await self._read(
            "SELECT function, state, count(*) FROM deliveries GROUP BY function, state"
        )
        tally: dict[str, dict[str, int]] = {}
        for function, state, n in rows:
            tally.setdefault(function, {})[state] = n
        return {function: Counts(**states) for function, states in tally.items()}

    async def runs(
        self, *, function: str | None = None, status: str | None = None,
        event_type: str | None = None, event_id: str | None = None,
        since: float | None = None, before_seq: int | None = None,
        after_seq: int | None = None, limit: int = 50,
    ) -> list[RunRecord]:
        sql, params, ascending = runs_query(
            function=function, status=status, event_type=event_type, event_id=event_id,
            since=since, before_seq=before_seq, after_seq=after_seq, limit=limit,
        )
        records = [run_record(row) for row in await self._read(sql, params)]
        return records[::-1] if ascending else records

    async def run(self, invocation: str) -> RunRecord | None:
        rows = await self._read(RUN_BY_INVOCATION, (invocation,))
        return run_record(rows[0]) if rows else None

    async def runs_for_events(self, event_ids: Sequence[str]) -> list[RunRecord]:
        if not event_ids:
            return []
        return [run_record(row) for row in await self._read(*runs_for_events_query(event_ids))]

    async def event(self, event_id: str) -> Event | None:
        rows = await self._read("SELECT body FROM events WHERE id = ?", (event_id,))
        return Event.from_dict(json.loads(rows[0][0])) if rows else None

    async def dead_letters(
        self, function: str | None = None, ids: Sequence[str] | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        rows = await self._read(
            "SELECT d.id, d.function, e.body, d.attempts, d.error, d.traceback, d.updated"
            f" FROM (SELECT * FROM deliveries WHERE {DEAD_FILTER}) AS d"
            " JOIN events AS e ON e.id = d.event_id"
            " ORDER BY d.updated DESC, d.id DESC LIMIT :limit",
            {"function": function, "ids": id_list(ids), "limit": limit},
        )
        return [
            DeadLetter(str(row[0]), row[1], Event.from_dict(json.loads(row[2])), *row[3:])
            for row in rows
        ]

    async def replay_dead(
        self, now: float, function: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        rows: list[tuple[str]] = await self._write(
            lambda conn: conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, due = :now,"
                f" updated = :now, error = NULL, traceback = NULL WHERE {DEAD_FILTER}"
                " RETURNING function",
                {"now": now, "function": function, "ids": id_list(ids)},
            ).fetchall()
        )
        self._notify_all({row[0] for row in rows})
        return len(rows)

    async def drop_dead(self, function: str | None = None, ids: Sequence[str] | None = None) -> int:
        return await self._write(
            lambda conn: (
                conn.execute(
                    f"DELETE FROM deliveries WHERE {DEAD_FILTER}",
                    {"function": function, "ids": id_list(ids)},
                ).rowcount
            )
        )

    async def replay(
        self, function: str, since: float, matches: Callable[[str], bool], now: float
    ) -> int:
        count = await self._write(
            lambda conn: upkeep.replay_events(conn, function, since, matches, now)
        )
        if count:
            self.notify(function)
        return count

    async def prune(self, events_before: float, history_before: float) -> None:
        await self._write(lambda conn: upkeep.prune(conn, events_before, history_before))

    # -- schedules and idempotency -----------------------------------------

    async def last_tick(self, function: str) -> float | None:
        rows = await self._read("SELECT last_tick FROM schedules WHERE key = ?", (function,))
        return rows[0][0] if rows else None

    async def fire_tick(self, function: str, tick: float, event: Event, targets: Targets) -> bool:
        rows = rows_of([(event, targets)])
        fired = await self._write(lambda conn: upkeep.fire_tick(conn, function, tick, rows))
        if fired:
            self._notify_all(set(targets))
        return fired

    async def remember(self, key: str, value: JSON, ttl: float) -> JSON | None:
        return await self._write(lambda conn: upkeep.remember(conn, key, value, ttl))

    async def recall(self, key: str) -> JSON | None:
        rows = await self._read(
            "SELECT value FROM kv WHERE key = ? AND expires >= ?", (key, time.time())
        )
        return json.loads(rows[0][0]) if rows else None

    # -- wake-ups ----------------------------------------------------------

    async def wait_for_work(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        await self._external.wait(function, timeout)

    async def _data_version(self) -> int:
        # Asked on the write connection, whose own commits do not move it:
        # only other processes' commits count.
        return await self._write(
            lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]), durable=False
        )
