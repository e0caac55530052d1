"""The SQLite store's rarely run writes: replay, retention, schedule ticks, idempotency.

Each runs inside a `GroupCommit` transaction on the write connection; the
delivery path's writes stay in `sqlite.py` and `sqlite_rows.py`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence

from runtime.events import JSON
from runtime.store.sqlite_rows import Row, insert_events
from runtime.store.sqlite_schema import MAX_HISTORY


def replay_events(
    conn: sqlite3.Connection, function: str, since: float, matches: Callable[[str], bool],
    now: float,
) -> int:
    """A pending delivery to `function` of every event stored since `since` whose type
    `matches`; returns how many."""
    # One INSERT ... SELECT with the pattern as an SQL function: a week of
    # retained events never has to fit in memory at once.
    conn.create_function("fnrun_matches", 1, matches, deterministic=True)
    return conn.execute(
        "INSERT INTO deliveries (event_id, function, state, due, updated)"
        " SELECT id, ?1, 'pending', ?2, ?2 FROM events"
        " WHERE stored_at >= ?3 AND fnrun_matches(type) ORDER BY stored_at",
        (function, now, since),
    ).rowcount


def prune(conn: sqlite3.Connection, events_before: float, history_before: float) -> None:
    """Drop events no delivery needs, old or surplus history, and expired keys."""
    conn.execute(
        # NOT IN builds one transient index of the (few) live deliveries'
        # event ids per prune, so no index has to be kept on every write.
        "DELETE FROM events WHERE stored_at < ? AND id NOT IN (SELECT event_id FROM deliveries)",
        (events_before,),
    )
    conn.execute("DELETE FROM history WHERE started < ?", (history_before,))
    conn.execute(
        "DELETE FROM history WHERE id <= (SELECT max(id) FROM history) - ?", (MAX_HISTORY,)
    )
    conn.execute("DELETE FROM kv WHERE expires < ?", (time.time(),))


def fire_tick(conn: sqlite3.Connection, function: str, tick: float, rows: Sequence[Row]) -> bool:
    """Store a schedule's event for `tick` unless that tick (or a later one) already fired."""
    last = conn.execute("SELECT last_tick FROM schedules WHERE key = ?", (function,)).fetchone()
    if last is not None and last[0] >= tick:
        return False
    if not insert_events(conn, rows, time.time()).fresh[0]:
        return False
    conn.execute(
        "INSERT INTO schedules (key, last_tick) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET last_tick = excluded.last_tick",
        (function, tick),
    )
    return True


def remember(conn: sqlite3.Connection, key: str, value: JSON, ttl: float) -> JSON | None:
    """Keep `value` under `key` for `ttl` seconds, unless a live value is there: return that."""
    now = time.time()
    conn.execute("DELETE FROM kv WHERE key = ? AND expires < ?", (key, now))
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    if row is not None:
        return json.loads(row[0])
    conn.execute(
        "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?)",
        (key, json.dumps(value, separators=(",", ":")), now + ttl),
    )
    return None
