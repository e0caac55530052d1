"""How stored records look as JSON: one shape per record kind, shared by the
HTTP API and the command line's `--json`, so `GET /_/invocations` and
`fnrun history --json` can never drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runtime.events import LogLine
from runtime.store.base import DeadLetter, RunRecord

MAX_LIMIT = 1000
"""Most records one listing returns: `--limit` of `fnrun history`, `?limit=` of the API."""


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an RFC 3339 UTC string."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def invocation_json(record: RunRecord) -> dict[str, Any]:
    """A run record: `fnrun history --json`, `GET /_/invocations` and `GET /_/runs/{id}`."""
    return {
        "invocation": record.invocation,
        "event_id": record.event_id,
        "event_type": record.event_type,
        "function": record.function,
        "attempt": record.attempt,
        "outcome": record.status,
        "started": iso(record.started),
        "duration_ms": round(record.duration * 1000, 3),
        "error": record.error,
        "traceback": record.traceback,
        "result": record.result,
        "emitted": list(record.emitted),
        "logs": [log_json(line) for line in record.logs],
        "seq": record.seq,
    }


run_json = invocation_json


def log_json(line: LogLine) -> dict[str, Any]:
    """One line a run wrote (`fnrun logs --json` adds its run's ids)."""
    return {"at": iso(line.at), "stream": line.stream, "level": line.level, "text": line.text}


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "function": letter.function,
        "attempts": letter.attempts,
        "error": letter.error,
        "traceback": letter.traceback,
        "failed_at": iso(letter.failed_at),
        "event": letter.event.to_dict(),
    }
