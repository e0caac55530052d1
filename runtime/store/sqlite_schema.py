"""The SQLite store's schema, bounds and row helpers (used by `sqlite.py`)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from runtime.errors import StoreError
from runtime.events import JSON, Event, Outcome
from runtime.store.base import Delivery, Targets
from runtime.store.runs import (
    MAX_ERROR,
    MAX_TRACEBACK,
    RunRecord,
    clip,
    emitted_ids,
    ids_json,
    ids_of,
    logs_json,
    logs_of,
    new_invocation,
)
from runtime.store.sqlite_rows import insert_events

MAX_HISTORY = 100_000
"""Most run records kept, besides `retention.history`."""
MAX_RESULT = 4096

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, time REAL NOT NULL,
    body TEXT NOT NULL, stored_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_stored_at ON events (stored_at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, function TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, updated REAL NOT NULL,
    error TEXT, traceback TEXT);
CREATE INDEX IF NOT EXISTS deliveries_claim ON deliveries (function, state, due);
CREATE INDEX IF NOT EXISTS deliveries_retry ON deliveries (function, due)
    WHERE state = 'pending' AND attempts > 0;
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, function TEXT NOT NULL,
    attempt INTEGER NOT NULL, status TEXT NOT NULL, started REAL NOT NULL,
    duration REAL NOT NULL, error TEXT, result TEXT,
    invocation TEXT, event_type TEXT, traceback TEXT, emitted TEXT, logs TEXT);
CREATE TABLE IF NOT EXISTS schedules (key TEXT PRIMARY KEY, last_tick REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL);
"""

RUN_COLUMNS = {
    "invocation": "TEXT", "event_type": "TEXT", "traceback": "TEXT", "emitted": "TEXT",
    "logs": "TEXT",
}
"""The run record's columns (SPEC 11) that a history table of an older fnrun lacks."""

INDEXES = """
DROP INDEX IF EXISTS history_status;
DROP INDEX IF EXISTS history_invocation;
DROP INDEX IF EXISTS history_invocation_tail;
CREATE INDEX IF NOT EXISTS history_function ON history (function, id);
CREATE INDEX IF NOT EXISTS history_failures ON history (status, id) WHERE status != 'ok';
CREATE INDEX IF NOT EXISTS history_event ON history (event_id);
"""
"""What `Store.runs` filters on, each walked newest first by id (the `seq`; the rowid
closes every index). Each costs every outcome's commit, so each is kept to keys that
grow with time, whose new entries share a page: event ids are time-ordered (UUIDv7),
and failures are few. An invocation is found by walking back from the newest record
(`sqlite_runs.RUN_BY_INVOCATION`): an index on it cost the drain 1.6% of the
supervisor's instructions, on its random digits ~6x the WAL per record too."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, add the run columns a store of an older fnrun lacks, then index."""
    conn.executescript(SCHEMA)
    have = {row[1] for row in conn.execute("PRAGMA table_info(history)")}
    for column, kind in RUN_COLUMNS.items():
        if column not in have:
            conn.execute(f"ALTER TABLE history ADD COLUMN {column} {kind}")
    conn.executescript(INDEXES)

CLAIM = (
    "UPDATE deliveries SET state = 'running', attempts = attempts + 1, updated = ?1"
    " WHERE id IN ("
    "SELECT id FROM (SELECT id FROM deliveries INDEXED BY deliveries_retry"
    " WHERE function = ?2 AND state = 'pending' AND attempts > 0 AND due <= ?3"
    " ORDER BY due, id LIMIT ?4)"
    " UNION ALL "
    "SELECT id FROM (SELECT id FROM deliveries"
    " WHERE function = ?2 AND state = 'pending' AND attempts = 0 AND due <= ?3"
    " ORDER BY due, id LIMIT ?4)"
    " LIMIT ?4) RETURNING id, due, attempts, event_id"
)
"""Take up to ?4 due pending deliveries of function ?2 at time ?3: those already
tried (retries, and attempts a crash cut short) first, then fresh ones, each
oldest due first.

In plain due order a retry, due at its backoff's end, waited behind every
fresh delivery published before that moment: under overload, the whole
backlog (17.9 s at 125% load, issue 17 point 12). The partial index
`deliveries_retry` holds only pending deliveries already tried, so the first
half costs one index probe when there are none; INDEXED BY because without
statistics the planner picked the (function, state, due) index and scanned
the backlog for them."""


SQLITE_PREFIX = "sqlite:///"
_ESCAPES = {"%": "%25", "?": "%3F", "#": "%23"}
"""What a path must escape to stay a path in a URL (and `path_of` undoes): a folder
named `what?y` was cut at the `?`, and its database written to `what`, outside it."""


def url_of(path: Path) -> str:
    """The SQLite store URL of an absolute `path`, whatever characters its names hold."""
    text = str(path)
    for char, escape in _ESCAPES.items():
        text = text.replace(char, escape)
    return f"{SQLITE_PREFIX}{text}"


def sqlite_url_problem(url: str) -> str | None:
    """What is wrong with a SQLite store URL; None if nothing.

    The store takes no parameters, so a `?` or `#` is refused rather than
    silently cutting the path there; in a path they are written %3F and %23.
    """
    usage = "use sqlite:///relative/state.db or sqlite:////absolute/state.db"
    rest = url[len(SQLITE_PREFIX):] if url.startswith(SQLITE_PREFIX) else ""
    cut = min((rest.index(c) for c in "?#" if c in rest), default=None)
    if cut is not None:
        return (f"SQLite store URL {url!r} has {rest[cut:]!r} after its path: the SQLite "
                "store takes no parameters (write ? in a path as %3F, # as %23)")
    try:
        path = unquote(rest, errors="strict")
    except UnicodeDecodeError:
        return f"bad SQLite store URL {url!r}: a %-escape is not UTF-8"
    if path in ("", "/", ":memory:"):
        return f"bad SQLite store URL {url!r} ({usage})"
    if "\0" in path:
        return f"bad SQLite store URL {url!r}: the path holds a NUL character"
    return None


def raw_path_of(url: str) -> str:
    """The path a SQLite store URL names, %-escapes decoded (relative or absolute).

    Raises:
        StoreError: the URL is not one `sqlite_url_problem` lets through.
    """
    problem = sqlite_url_problem(url)
    if problem:
        raise StoreError(problem)
    return unquote(url[len(SQLITE_PREFIX):])


def path_of(url: str) -> Path:
    """The database file of `sqlite:////abs/state.db` (or `sqlite:///rel.db`, cwd-relative)."""
    return Path(raw_path_of(url)).absolute()


# One encoder for every call: json.dumps with options builds a new one each time.
RESULT_ENCODER = json.JSONEncoder(default=repr, separators=(",", ":"))


def result_json(result: JSON) -> str:
    text = RESULT_ENCODER.encode(result)
    return text if len(text) <= MAX_RESULT else json.dumps(text[:MAX_RESULT] + "…")


def id_list(ids: Sequence[str] | None) -> str | None:
    """Delivery ids as a JSON list for json_each; ids that cannot be ours match nothing."""
    if ids is None:
        return None
    return json.dumps([int(i) for i in ids if i.isascii() and i.isdigit()])


# A dead-letter filter: optional function, optional JSON list of delivery ids.
DEAD_FILTER = (
    "state = 'dead' AND (:function IS NULL OR function = :function)"
    " AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))"
)


HISTORY_INSERT = (
    "INSERT INTO history (event_id, function, attempt, status, started, duration, error,"
    " result, invocation, event_type, traceback, emitted, logs)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

RUN_SELECT = (
    "SELECT id, invocation, event_id, event_type, function, attempt, status, started,"
    " duration, error, traceback, result, emitted, logs FROM history"
)


def history_row(event: Event, function: str, attempt: int, outcome: Outcome) -> tuple[Any, ...]:
    """The run record of an attempt as a `HISTORY_INSERT` row.

    What a run lacks is written '' rather than NULL: the sqlite3 module binds
    None through its adapter lookup, which raises and formats an AttributeError
    inside, ~1,500 instructions per None (3 a success, counted with callgrind).
    """
    return (
        event.id,
        function,
        attempt,
        outcome.status,
        outcome.started,
        outcome.duration,
        clip(outcome.error, MAX_ERROR) or "",
        result_json(outcome.result),
        outcome.invocation or new_invocation(),
        event.type,
        clip(outcome.traceback, MAX_TRACEBACK, keep_tail=True) or "",
        (ids_json(emitted_ids(outcome)) or "") if outcome.emits else "",
        (logs_json(outcome.logs) or "") if outcome.logs else "",
    )


PLAIN_HEAD = (
    "INSERT INTO history (event_id, function, attempt, status, started, duration, result,"
    " invocation, event_type)"
)
"""The run record of a quiet success: what it lacks (error, traceback, emitted, logs)
stays NULL by omission, 4 values fewer to bind (~1,000 instructions each, counted)."""


def plain_row(event: Event, function: str, attempt: int, outcome: Outcome) -> tuple[Any, ...]:
    """A `PLAIN_HEAD` row: for an outcome without error, traceback, emits or logs."""
    return (event.id, function, attempt, outcome.status, outcome.started, outcome.duration,
            result_json(outcome.result), outcome.invocation or new_invocation(), event.type)


def is_plain(outcome: Outcome) -> bool:
    """Whether `plain_row` holds all of the outcome's record."""
    return not (outcome.logs or outcome.emits or outcome.error or outcome.traceback)


def run_record(row: Sequence[Any]) -> RunRecord:
    """A `RUN_SELECT` row as a record."""
    (seq, invocation, event_id, event_type, function, attempt, status, started, duration,
     error, traceback, result, emitted, logs) = row
    return RunRecord(
        invocation=invocation or "", event_id=event_id, event_type=event_type or "",
        function=function, attempt=attempt, status=status, started=started, duration=duration,
        error=error or None, traceback=traceback or None,
        result=json.loads(result) if result else None,
        emitted=ids_of(emitted), logs=logs_of(logs), seq=seq,
    )


def insert_history(conn: sqlite3.Connection, delivery: Delivery, outcome: Outcome) -> None:
    conn.execute(
        HISTORY_INSERT, history_row(delivery.event, delivery.function, delivery.attempt, outcome)
    )


def finish(
    conn: sqlite3.Connection, delivery: Delivery, emits: Sequence[tuple[Event, Targets]],
    rows: Sequence[Any],
) -> set[str]:
    """Delete a finished delivery and publish its emits; the functions to wake."""
    done = conn.execute("DELETE FROM deliveries WHERE id = ? AND state != 'dead'", (delivery.id,))
    if done.rowcount == 0 or not rows:  # finished by an earlier attempt: emit nothing twice
        return set()
    return targets_of(emits, insert_events(conn, rows, time.time()).fresh)


def targets_of(items: Sequence[tuple[Event, Targets]], fresh: Sequence[bool]) -> set[str]:
    return {fn for (_, targets), new in zip(items, fresh, strict=True) if new for fn in targets}
