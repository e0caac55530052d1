"""Run records: every finished attempt kept with its logs, error and emitted events (SPEC 11).

A run record is written by the same store write that settles its outcome
(`Store.succeed`, `succeed_many`, `fail`, `record`): no commit of its own.
Each store gives records a store-wide increasing `seq`, the cursor that
listings page by (`before_seq`) and live views resume from (`after_seq`).
This module holds the record type and the encodings both adapters share.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.events import JSON, Event, LogLine, Outcome

MAX_ERROR = 2000
MAX_TRACEBACK = 32_768
"""Longest error line and traceback a run record keeps."""


@dataclass(frozen=True)
class RunRecord:
    """One finished attempt of a function on an event, newest first in `Store.runs`."""

    invocation: str
    """The id the pool gave the attempt: `fnrun dev` tags the run's log lines with it."""
    event_id: str
    event_type: str
    function: str
    attempt: int
    status: str
    """The outcome: "ok", "error", "timeout" or "crash"."""
    started: float
    duration: float
    error: str | None
    traceback: str | None
    result: JSON
    """The return value, truncated to a bounded JSON-safe form."""
    emitted: tuple[str, ...]
    """Ids of the events the run emitted (committed with its success)."""
    logs: tuple[LogLine, ...]
    """Its log lines, bounded; a last warning line says how many were cut."""
    seq: int
    """Store-wide increasing cursor; 0 in the `fnrun.runs` log record (not known there)."""


def clip(text: str | None, limit: int, keep_tail: bool = False) -> str | None:
    """Bound stored text; tracebacks keep their end, where the cause is."""
    if text is None or len(text) <= limit:
        return text
    return "…" + text[-limit:] if keep_tail else text[:limit] + "…"


def new_invocation() -> str:
    """An invocation id for an outcome that came without one (12 hex digits, as the pool's)."""
    return os.urandom(6).hex()


def emitted_ids(outcome: Outcome) -> tuple[str, ...]:
    """The ids of the events a run emitted: only a success's emits are committed."""
    return tuple(e.id for e in outcome.emits) if outcome.ok else ()


def logs_json(logs: Sequence[LogLine]) -> str | None:
    """A run's log lines as compact JSON rows `[at, stream, level, text]`; None if none."""
    if not logs:
        return None
    return json.dumps([[line.at, line.stream, line.level, line.text] for line in logs],
                      separators=(",", ":"), ensure_ascii=False)


def logs_of(text: str | None) -> tuple[LogLine, ...]:
    """Inverse of `logs_json`."""
    if not text:
        return ()
    return tuple(LogLine(float(at), stream, level, line) for at, stream, level, line
                 in json.loads(text))


def ids_json(ids: Sequence[str]) -> str | None:
    return json.dumps(list(ids), separators=(",", ":")) if ids else None


def ids_of(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def run_of_outcome(function: str, event: Event, attempt: int, outcome: Outcome,
                   result: JSON = None, seq: int = 0) -> RunRecord:
    """The record of a finished attempt as the settling code knows it (for `fnrun.runs`)."""
    return RunRecord(
        invocation=outcome.invocation, event_id=event.id, event_type=event.type,
        function=function, attempt=attempt, status=outcome.status, started=outcome.started,
        duration=outcome.duration, error=outcome.error, traceback=outcome.traceback,
        result=outcome.result if result is None else result, emitted=emitted_ids(outcome),
        logs=outcome.logs, seq=seq,
    )


RUNS_LOG = logging.getLogger("fnrun.runs")
"""One INFO record per finished run, `extra={"run": RunRecord, "event": Event}` (its
`seq` 0): `fnrun dev` prints it as a line, the `otel` export makes it a span in the
event's trace. Off (WARNING) under `fnrun run` unless configured."""


def announce(function: str, event: Event, attempt: int, outcome: Outcome) -> None:
    """Log a finished run on `RUNS_LOG`; call it once its outcome is committed."""
    if not RUNS_LOG.isEnabledFor(logging.INFO):
        return  # no record built: `fnrun run` settles thousands a second
    run = run_of_outcome(function, event, attempt, outcome)
    RUNS_LOG.info("%s %s %s %s %s %.1fms", function, run.invocation[:8], run.event_type,
                  run.event_id, run.status, run.duration * 1000, extra={"run": run, "event": event})


def has_wildcard(pattern: str) -> bool:
    """Whether an event type filter is a pattern rather than one exact type."""
    return "*" in pattern
