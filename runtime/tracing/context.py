"""W3C trace context on events: the CloudEvents distributed tracing extension.

https://www.w3.org/TR/trace-context/ and
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/extensions/distributed-tracing.md

Every stored event carries a `traceparent` extension (and `tracestate` when
one came with it). A producer's valid `traceparent` is kept; a missing or
malformed one starts a new trace (W3C 3.2.2: an invalid header is ignored,
not an error, and its `tracestate` with it). Events a handler emits continue
the trace of the event it handled: same trace id, and as parent id the span
of the attempt that emitted them (`attempt_span`), so an OpenTelemetry
export links the spans; `fnrunparent` names the event they came from.

The supervisor sets these on emitted events, never the worker: a handler is
untrusted and must not forge where its events came from.

Leaf module: standard library and `runtime.events` only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, NamedTuple

from runtime.events import Event

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
PARENT = "fnrunparent"
"""Extension naming the event whose handler emitted this one (its id)."""
MAX_TRACESTATE = 512
"""Longest `tracestate` kept; W3C 3.3.1.5 asks to propagate at least this much."""
SAMPLED = "01"
_HEX = frozenset("0123456789abcdef")


class TraceParent(NamedTuple):
    """The fields of a valid `traceparent` value."""

    trace_id: str
    """32 lower-case hex digits, not all zero."""
    span_id: str
    """16 lower-case hex digits, not all zero: the caller's span (`parent-id`)."""
    flags: str
    """2 hex digits; bit 0 is `sampled`."""

    def __str__(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse(value: Any) -> TraceParent | None:
    """The trace context in a `traceparent` value, or None when it is not a valid one.

    Version 00 is exactly `00-TRACEID-PARENTID-FLAGS`; a later version may
    append fields after a dash, which are ignored (W3C 3.2.4). Version ff is
    invalid, and so are upper-case digits and all-zero ids.
    """
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    if len(value) < 55 or not _HEX.issuperset(value[:2]) or value[:2] == "ff":
        return None
    if (value[:2] == "00" and len(value) != 55) or (len(value) > 55 and value[55] != "-"):
        return None
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    trace_id, span_id, flags = value[3:35], value[36:52], value[53:55]
    if not _HEX.issuperset(trace_id + span_id + flags):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return TraceParent(trace_id, span_id, flags)


class _Random:
    """Random hex from one getrandom call per 128 uses (ids need no secrecy, only
    uniqueness, but W3C 6.2 asks for random trace ids)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._next = "", 0

    def __call__(self, digits: int) -> str:
        with self._lock:
            at = self._next
            if at + digits > len(self._pool):
                self._pool, at = os.urandom(3072).hex(), 0
            self._next = end = at + digits
            return self._pool[at:end]


_random = _Random()


def new_trace() -> TraceParent:
    """A new trace: random 16-byte trace id, 8-byte span id, sampled."""
    value = _new_traceparent()
    return TraceParent(value[3:35], value[36:52], SAMPLED)


def _new_traceparent() -> str:
    """`new_trace()` as a header value, without the tuple (one per webhook request)."""
    while True:
        digits = _random(48)
        if digits[:32] != _ZERO_TRACE and digits[32:] != _ZERO_SPAN:
            return f"00-{digits[:32]}-{digits[32:]}-01"


_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def trace_extensions(traceparent: Any = None, tracestate: Any = None) -> dict[str, str]:
    """The tracing extensions of an incoming event: its own when valid, else a new trace.

    `tracestate` is kept only with a valid `traceparent` (W3C 3.3: it is
    meaningless without one), as a printable ASCII string of at most
    `MAX_TRACESTATE` characters.
    """
    if traceparent is None:
        return {TRACEPARENT: _new_traceparent()}
    parent = parse(traceparent)
    if parent is None:
        return {TRACEPARENT: _new_traceparent()}
    out = {TRACEPARENT: str(parent)}
    if (isinstance(tracestate, str) and 0 < len(tracestate) <= MAX_TRACESTATE
            and tracestate.isascii() and tracestate.isprintable()):
        out[TRACESTATE] = tracestate
    return out


def attempt_span(event_id: str, function: str, attempt: int) -> str:
    """The span id of one attempt: derived from what names the attempt, so the
    supervisor (for emitted events) and the OpenTelemetry export agree on it
    without sharing state."""
    digest = hashlib.blake2b(f"{event_id}\0{function}\0{attempt}".encode(), digest_size=8)
    span = digest.hexdigest()
    return span if span != "0" * 16 else "1".rjust(16, "0")


def emitted(events: Iterable[Event], parent: Event, function: str, attempt: int) -> list[Event]:
    """Events a handler emitted while handling `parent` (attempt `attempt` of
    `function`), continuing its trace: same trace id (a new one if `parent`
    has none), the attempt's span as their parent id, `parent`'s tracestate,
    and `fnrunparent` = `parent.id`. What the handler set is replaced."""
    context = parse(parent.extensions.get(TRACEPARENT)) or new_trace()
    tracing: dict[str, str] = {
        TRACEPARENT: str(context._replace(span_id=attempt_span(parent.id, function, attempt))),
        PARENT: parent.id,
    }
    state = parent.extensions.get(TRACESTATE)
    if isinstance(state, str):
        tracing[TRACESTATE] = state
    out = []
    for event in events:
        extensions = {k: v for k, v in event.extensions.items()
                      if k not in (TRACEPARENT, TRACESTATE, PARENT)}
        extensions.update(tracing)
        out.append(replace(event, extensions=extensions))
    return out


def trace_id(event: Event) -> str | None:
    """The trace id an event carries, if it carries a valid one."""
    context = parse(event.extensions.get(TRACEPARENT))
    return None if context is None else context.trace_id
