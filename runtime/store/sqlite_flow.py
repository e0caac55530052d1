"""Flow control on the SQLite store (SPEC 12): claims that respect keys and rates.

Keys are computed once per delivery, by the first flow claim that sees it
(*admission*): every path that stores deliveries (publish, `fnrun emit` from
another process, a handler's emits, replay, schedule ticks) stays as it is,
and functions without rules never pay for it. A cursor per function
(`flow_cursor`) remembers the last delivery id admitted; ids only grow, in
commit order, under the file's write lock.

A claim then picks, per key, what may start: for `order: key` the key's head
(its lowest delivery id not dead-lettered) if it is pending and due, so a
running or failed-and-waiting head holds its key. It finds the heads by one
index seek per key (`HEADS`), so its cost follows the function's keys, not its
backlog; a success removes its delivery's key row in the same commit. For
`per_key: n` the earliest due pending deliveries up to n minus those running. `limit` bounds
the running deliveries of the function, and a rate limit the starts in any
window of `period` (a log of recent starts per key, `flow_starts`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from runtime.events import Outcome
from runtime.flow.rules import FlowRules, key_of
from runtime.store.base import Delivery, Success
from runtime.store.envelope import StoredEvent
from runtime.store.sqlite_rows import delete_ids
from runtime.store.sqlite_schema import HISTORY_INSERT, history_row

if TYPE_CHECKING:
    from runtime.store.sqlite import SqliteStore

FLOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS flow_keys (
    delivery INTEGER PRIMARY KEY, function TEXT NOT NULL, key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS flow_keys_function ON flow_keys (function, key, delivery);
CREATE TABLE IF NOT EXISTS flow_cursor (function TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flow_starts (
    function TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS flow_starts_key ON flow_starts (function, key, at);
"""
ADMIT_BATCH = 5000
"""Most deliveries one claim admits; the rest wait for the next claim."""
PURGE_EVERY = 30.0
"""Seconds between purges of keys whose deliveries ended without a flow settle (a
crash between a success and its `forget`, `fnrun dead-letters drop`, pruning)."""

LIVE = (
    "FROM flow_keys AS f JOIN deliveries AS d ON d.id = f.delivery"
    " WHERE f.function = :fn AND d.state != 'dead'"
)
KEYS = (
    "WITH RECURSIVE keys(key) AS ("
    " SELECT (SELECT min(key) FROM flow_keys WHERE function = :fn)"
    " UNION ALL SELECT (SELECT min(key) FROM flow_keys WHERE function = :fn AND key > keys.key)"
    " FROM keys WHERE keys.key IS NOT NULL) "
)
"""The function's distinct keys, one index seek each (not a scan of its deliveries)."""
HEADS = KEYS + (
    ", heads(id, key) AS MATERIALIZED (SELECT (SELECT f.delivery FROM flow_keys AS f"
    " JOIN deliveries AS d ON d.id = f.delivery WHERE f.function = :fn AND f.key = keys.key"
    " AND d.state != 'dead' ORDER BY f.delivery LIMIT 1), key FROM keys"
    " WHERE keys.key IS NOT NULL)"
    " SELECT d.id, heads.key FROM heads JOIN deliveries AS d ON d.id = heads.id"
    " WHERE d.state = 'pending' AND d.due <= :now ORDER BY d.due, d.id"
)
"""`order: key`: each key's oldest live delivery, if it is pending and due. Per key one
seek in `flow_keys_function` to its lowest delivery not dead-lettered (finished ones
leave `flow_keys` at their settle), so a claim costs the keys, not the backlog."""
PER_KEY = (
    "SELECT id, key FROM (SELECT d.id AS id, f.key AS key, d.state AS state, d.due AS due,"
    " sum(d.state = 'running') OVER (PARTITION BY f.key) AS busy,"
    " row_number() OVER (PARTITION BY f.key, d.state = 'pending' AND d.due <= :now"
    " ORDER BY d.due, d.id) AS rank " + LIVE + ")"
    " WHERE state = 'pending' AND due <= :now AND rank <= :per_key - busy ORDER BY due, id"
)
"""`per_key: n`: per key, the earliest due pending deliveries, n minus those running."""
ANY = "SELECT d.id AS id, f.key AS key " + LIVE + " AND d.state = 'pending' AND d.due <= :now" \
      " ORDER BY d.due, d.id"
"""No bound per key (a rate limit alone): every due pending delivery."""


def admit(conn: sqlite3.Connection, function: str, rules: FlowRules) -> None:
    """Give each delivery stored since the last admission its key (and, debounced,
    supersede what waits for the same key)."""
    row = conn.execute("SELECT last FROM flow_cursor WHERE function = ?", (function,)).fetchone()
    last = row[0] if row else 0
    if row is None:  # first flow claim of this function: adopt what waits already
        conn.execute("INSERT INTO flow_cursor (function, last) VALUES (?, 0)", (function,))
    scanned = conn.execute(
        "SELECT d.id, d.function, CASE WHEN d.function = ?1 THEN"
        " (SELECT body FROM events WHERE id = d.event_id) END"
        " FROM deliveries AS d WHERE d.id > ?2 ORDER BY d.id LIMIT ?3",
        (function, last, ADMIT_BATCH),
    ).fetchall()
    if not scanned:
        return
    rows = [(d, function, key_of(json.loads(body) if body else {}, rules.key))
            for d, fn, body in scanned if fn == function]
    if rules.debounce is not None:
        debounce(conn, function, rows, rules.debounce)
    conn.executemany("INSERT OR IGNORE INTO flow_keys (delivery, function, key) VALUES (?, ?, ?)",
                     rows)
    conn.execute("UPDATE flow_cursor SET last = ? WHERE function = ?", (scanned[-1][0], function))


def debounce(
    conn: sqlite3.Connection, function: str, rows: list[tuple[int, str, str]], period: float
) -> None:
    """Per key, the newest of `rows` waits `period` after its publish; every delivery of
    the key waiting before it (not running) is superseded: gone, with a history row."""
    newest = {key: delivery for delivery, _, key in rows}
    superseded = [(delivery, newest[key]) for delivery, _, key in rows
                  if newest[key] != delivery]
    for key, delivery in newest.items():
        superseded += [(older, delivery) for (older,) in conn.execute(
            "SELECT d.id " + LIVE + " AND f.key = :key AND d.state = 'pending'",
            {"fn": function, "key": key})]
        conn.execute("UPDATE deliveries SET due = due + ? WHERE id = ?", (period, delivery))
    if not superseded:
        return
    gone = json.dumps([older for older, _ in superseded])
    events = dict(conn.execute(
        "SELECT d.id, e.body FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
        " WHERE d.id IN (SELECT value FROM json_each(?))", (gone,)).fetchall())
    newer_ids = dict(conn.execute(
        "SELECT d.id, e.id FROM deliveries AS d JOIN events AS e ON e.id = d.event_id"
        " WHERE d.id IN (SELECT value FROM json_each(?))",
        (json.dumps([newer for _, newer in superseded]),)).fetchall())
    now = time.time()
    for older, newer in superseded:
        event = StoredEvent.of(json.loads(events[older]))
        outcome = Outcome("superseded", now, 0.0, error=f"superseded by event {newer_ids[newer]}")
        conn.execute(HISTORY_INSERT, history_row(event, function, 0, outcome))
    conn.execute("DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?))", (gone,))
    conn.execute("DELETE FROM flow_keys WHERE delivery IN (SELECT value FROM json_each(?))",
                 (gone,))


def forget(conn: sqlite3.Connection, ids: Sequence[tuple[Any]]) -> None:
    """Ended deliveries leave `flow_keys`: a key's head probe would walk past them. One
    still there (dead-lettered meanwhile) keeps its key, for a replay of it."""
    delete_ids(conn, "DELETE FROM flow_keys WHERE NOT EXISTS (SELECT 1 FROM deliveries"
                     " WHERE id = flow_keys.delivery) AND delivery IN", ids)


class RateLog:
    """Starts of the last `period` per key, in `flow_starts`: at most `limit` in any window."""

    def __init__(self, function: str, rules: FlowRules) -> None:
        self.function = function
        self.rate = rules.rate
        self.keyed = rules.keyed
        self.ready_at: float | None = None
        """After a claim: when a start the rate held back may go (None if none was)."""

    def admit(self, conn: sqlite3.Connection, picked: list[tuple[int, str]], now: float,
              room: int) -> list[int]:
        """Of `picked` (id, key), those whose key has budget now, at most `room`; logs them."""
        self.ready_at = None
        if self.rate is None:
            return [d for d, _ in picked[:room]]
        limit, period = self.rate.limit, self.rate.period
        fn = self.function
        conn.execute("DELETE FROM flow_starts WHERE function = ? AND at <= ?", (fn, now - period))
        used: dict[str, list[float]] = {}
        chosen: list[int] = []
        for delivery, key in picked:
            if len(chosen) >= room:
                break
            bucket = key if self.keyed else ""
            starts = used.get(bucket)
            if starts is None:
                starts = used[bucket] = [at for (at,) in conn.execute(
                    "SELECT at FROM flow_starts WHERE function = ? AND key = ? ORDER BY at",
                    (fn, bucket))]
            if len(starts) >= limit:
                free = starts[-limit] + period
                self.ready_at = free if self.ready_at is None else min(self.ready_at, free)
                continue
            starts.append(now)
            chosen.append(delivery)
            conn.execute("INSERT INTO flow_starts (function, key, at) VALUES (?, ?, ?)",
                         (fn, bucket, now))
        return chosen


class SqliteFlow:
    """The flow-control claim path of one function on a `SqliteStore`."""

    def __init__(self, store: SqliteStore, function: str, rules: FlowRules) -> None:
        self.store = store
        self.function = function
        self.rules = rules
        self.rate = RateLog(function, rules)
        self._ready = False
        self._purged = 0.0
        self._claimed_at = 0.0

    def _claim(self, conn: sqlite3.Connection, limit: int, now: float) -> list[tuple[Any, ...]]:
        fn, rules = self.function, self.rules
        if not self._ready:  # in the claim's transaction (executescript would commit it)
            for statement in FLOW_SCHEMA.split(";"):
                conn.execute(statement)
            self._ready = True
        admit(conn, fn, rules)
        if time.monotonic() - self._purged > PURGE_EVERY:
            self._purged = time.monotonic()
            conn.execute("DELETE FROM flow_keys WHERE function = ? AND NOT EXISTS"
                         " (SELECT 1 FROM deliveries WHERE id = flow_keys.delivery)", (fn,))
        # `limit` (invocations at once) needs no check here: one supervisor owns the
        # file (sqlite_lock), and its dispatcher runs at most `limit` at once. Claiming
        # ahead of the runners, as the plain path does, keeps claims few; except under
        # a rate limit, whose starts are counted at claim: those wait for a free runner.
        room = limit
        if rules.rate is not None:
            (running,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE function = ? AND state = 'running'",
                (fn,)).fetchone()
            room = min(limit, rules.most_running - running)
            if room <= 0:
                return []
        per_key = rules.key_limit
        sql = HEADS if rules.order else ANY if per_key is None else PER_KEY
        params = {"fn": fn, "now": now, "per_key": per_key}
        picked = conn.execute(sql + " LIMIT :many", {**params, "many": room * 4 + 64}).fetchall()
        ids = self.rate.admit(conn, picked, time.time(), room)
        if not ids:
            return []
        claimed = conn.execute(
            "UPDATE deliveries SET state = 'running', attempts = attempts + 1, updated = ?"
            " WHERE id IN (SELECT value FROM json_each(?)) RETURNING id, attempts, event_id",
            (time.time(), json.dumps(ids)),
        ).fetchall()
        bodies = dict(conn.execute(
            "SELECT id, body FROM events WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps([row[2] for row in claimed]),),
        ).fetchall())
        return sorted((row_id, attempts, bodies[eid]) for row_id, attempts, eid in claimed)

    async def claim(self, limit: int, now: float) -> list[Delivery]:
        self._claimed_at = now
        rows = await self.store._write(
            lambda conn: self._claim(conn, limit, now), durable=False)
        return [Delivery(str(row_id), self.function, StoredEvent.of(json.loads(body)), attempts)
                for row_id, attempts, body in rows]

    async def next_due(self, now: float) -> float | None:
        """The next time a claim may find work that no settle will announce: a retry
        falling due, or the rate budget freeing up. A key held by a running
        delivery is freed by its settle, which wakes the dispatcher."""
        # Due after the last claim's time, not after `now`: a delivery that fell due
        # between the two (a debounce ending while the claim waited for the writer)
        # was not taken, and must not wait for the idle poll. What was due by then and
        # not taken waits behind a running delivery, whose settle wakes the dispatcher.
        rows = await self.store._read(
            "SELECT min(due) FROM deliveries WHERE function = ? AND state = 'pending' AND due > ?",
            (self.function, min(now, self._claimed_at)))
        due: float | None = rows[0][0]
        ready = self.rate.ready_at
        if ready is not None:
            due = ready if due is None else min(due, ready)
        return due

    async def succeed_many(self, items: Sequence[Success]) -> None:
        await self.store.succeed_many(items, also=((forget, [(d.id,) for d, _, _ in items]),))

    async def fail(self, delivery: Delivery, outcome: Outcome, retry_at: float | None) -> None:
        await self.store.fail(delivery, outcome, retry_at)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self.store.release(deliveries)
