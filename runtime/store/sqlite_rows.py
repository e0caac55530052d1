"""Events and their deliveries as SQLite rows: serialised by the caller, inserted by the writer.

Used by `GroupCommit` (publishes merged into one insert), by `finish` (a
success's emits) and by schedule ticks.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from runtime.errors import StoreError
from runtime.events import Event
from runtime.store.base import Targets
from runtime.store.envelope import envelope_json

STATEMENT_ROWS = (256, 64, 16, 4, 1)
"""Rows per multi-row statement, largest first: a write of n rows takes a few
statements of these sizes, and SQLite's statement cache holds one of each."""

Row = tuple[str, str, float, str, Targets]
"""An event ready to store: id, type, time, JSON envelope, targets."""

EXISTING = "SELECT e.id FROM json_each(?) AS j JOIN events AS e ON e.id = j.value"
"""Which ids of a JSON list are stored events: a join, one primary-key probe per id.

`id IN (SELECT value FROM json_each(?))` built an ephemeral index of the list
first, in every publish's commit: 14.6 -> 10.7 us a statement for one id, 21.4
-> 16.6 for 16 (bench/README, "The async webhook under 32 connections")."""
BODIES = "SELECT e.id, e.body FROM json_each(?) AS j JOIN events AS e ON e.id = j.value"
"""(id, body) of the stored events of a JSON list of ids, as `EXISTING` (an id listed
twice comes twice)."""


def insert_all(conn: sqlite3.Connection, head: str, rows: Sequence[Sequence[Any]]) -> None:
    """`head` ("INSERT INTO t (a, b)") for every row, a few multi-row statements in all.

    `executemany` steps once per row, and each step gives up the interpreter
    lock and takes it back, which on the writer thread means waiting for a
    busy event loop to let go of it every row.
    """
    _each_chunk(conn, rows, lambda n, width: f"{head} VALUES "
                + ", ".join(["(" + ", ".join("?" * width) + ")"] * n))


def delete_ids(conn: sqlite3.Connection, sql: str, ids: Sequence[tuple[Any]]) -> None:
    """`sql` (a DELETE ending in "id IN") for every `(id,)`, a few statements in all."""
    _each_chunk(conn, ids, lambda n, _: f"{sql} ({', '.join('?' * n)})")


def _each_chunk(
    conn: sqlite3.Connection, rows: Sequence[Sequence[Any]], text: Callable[[int, int], str]
) -> None:
    if not rows:
        return
    width = len(rows[0])
    # SQLite before 3.32 allows 999 parameters per statement, later ones 32,766.
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    start = 0
    for size in STATEMENT_ROWS:
        if size > most:
            continue
        while len(rows) - start >= size:
            chunk = rows[start:start + size]
            conn.execute(text(size, width), [value for row in chunk for value in row])
            start += size


def rows_of(items: Sequence[tuple[Event, Targets]]) -> list[Row]:
    """Serialise events in the caller, off the writer thread's critical path."""
    return [(e.id, e.type, e.time.timestamp(), envelope_json(e), t) for e, t in items]


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
    seen = {found for (found,) in conn.execute(EXISTING, (ids,))}
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
                claimed.append((event_id, fn, now, now, "running", 1))
                claimed_at.append((index, fn))
            else:
                pending.append((event_id, fn, now, now, "pending"))
    insert_all(conn, "INSERT INTO events (id, type, time, body, stored_at)", events)
    handed = _insert_claimed(conn, claimed, claimed_at)
    insert_all(conn, "INSERT INTO deliveries (event_id, function, due, updated, state)", pending)
    return Inserted(fresh, handed)


def _insert_claimed(
    conn: sqlite3.Connection, claimed: list[tuple[str, str, float, float, str, int]],
    claimed_at: list[tuple[int, str]],
) -> list[tuple[int, str, int]]:
    if not claimed:
        return []
    # AUTOINCREMENT ids only grow, and this transaction holds the file's write
    # lock: the new rows are exactly those above the current maximum, in order.
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()
    insert_all(conn, "INSERT INTO deliveries (event_id, function, due, updated, state, attempts)",
               claimed)
    ids = [row[0] for row in conn.execute(
        "SELECT id FROM deliveries WHERE id > ? ORDER BY id", (top,))]
    if len(ids) != len(claimed):
        raise StoreError(f"stored {len(claimed)} claimed deliveries, found {len(ids)}")
    return [(index, fn, row_id) for (index, fn), row_id in zip(claimed_at, ids, strict=True)]
