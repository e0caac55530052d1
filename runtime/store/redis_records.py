"""How the Redis store writes values: JSON bodies, history records, publish arguments.

Shared by the delivery path (`redis`) and the operations (`redis_operations`).
These run once or more per delivery, so they avoid building dicts to encode.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from runtime.events import JSON, Event, LogLine, Outcome
from runtime.store.base import Targets
from runtime.store.envelope import envelope_json
from runtime.store.redis_batch import Arg
from runtime.store.runs import (
    MAX_ERROR,
    MAX_TRACEBACK,
    RunRecord,
    clip,
    emitted_ids,
    logs_json,
    new_invocation,
)

P = "fnrun:"
MAX_RESULT = 4096
"""Longest JSON return value kept in history; longer ones keep a text prefix."""
CHUNK = 500
"""Most items per script call, so no single script blocks Redis for long."""

# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON; unknown types as their str."""
    return _ENCODER.encode(value)


string: Callable[[str], str] = json.encoder.encode_basestring_ascii
"""A str as a JSON string, exactly as `_dumps` writes it."""


def bounded_json(result: JSON) -> str:
    """`result` as JSON, or a JSON string of its text's prefix if longer than MAX_RESULT."""
    text = dumps(result)
    return text if len(text) <= MAX_RESULT else string(text[:MAX_RESULT] + "...")


def record_json(function: str, event: Event, attempt: int, outcome: Outcome) -> str:
    """One run record as the Lua `record` takes it: "invocation started_ms status", a
    newline, then the `RunRecord` as JSON without its `seq` (the script adds it),
    formatted by hand (a dict and the encoder cost twice as much, on every delivery)."""
    result = "null" if outcome.result is None else bounded_json(outcome.result)
    error = "null" if outcome.error is None else string(clip(outcome.error, MAX_ERROR) or "")
    traceback = ("null" if outcome.traceback is None
                 else string(clip(outcome.traceback, MAX_TRACEBACK, keep_tail=True) or ""))
    emitted = dumps(emitted_ids(outcome)) if outcome.emits and outcome.ok else "[]"
    logs = logs_json(outcome.logs) or "[]"
    invocation = outcome.invocation or new_invocation()
    return (
        f"{invocation} {int(outcome.started * 1000)} {outcome.status}\n"
        f'{{"invocation":{string(invocation)},"event_id":{string(event.id)},'
        f'"event_type":{string(event.type)},"function":{string(function)},'
        f'"attempt":{attempt},"status":{string(outcome.status)},'
        f'"started":{number(outcome.started)},"duration":{number(outcome.duration)},'
        f'"error":{error},"traceback":{traceback},"result":{result},'
        f'"emitted":{emitted},"logs":{logs}}}'
    )


def run_of_json(body: str) -> RunRecord:
    """Inverse of `record_json` once stored (with its `seq`)."""
    fields = json.loads(body)
    fields["emitted"] = tuple(fields["emitted"])
    fields["logs"] = tuple(LogLine(*line) for line in fields["logs"])
    return RunRecord(**fields)


def number(value: float) -> str:
    """A float as JSON: float.__repr__ is what the encoder writes for finite ones."""
    return repr(float(value)) if math.isfinite(value) else dumps(value)


def publish_args(items: Sequence[tuple[Event, Targets]]) -> list[Arg]:
    """Flat ARGV for the Lua `publish_many`: count, then id, body, type, time, n, targets."""
    args: list[Arg] = [len(items)]
    for event, targets in items:
        at = int(event.time.timestamp() * 1_000_000)
        args += [event.id, envelope_json(event), event.type, at, len(targets), *targets]
    return args


def chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    """`values` in slices of at most CHUNK."""
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]
