"""W3C traceparent parsing, new traces and emitted events' context, from tables."""

from __future__ import annotations

import pytest

from runtime import cloudevents
from runtime.events import Event
from runtime.tracing.context import (
    TraceParent,
    attempt_span,
    emitted,
    new_trace,
    parse,
    trace_extensions,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (GOOD, TraceParent(TRACE, SPAN, "01")),
        (f"00-{TRACE}-{SPAN}-00", TraceParent(TRACE, SPAN, "00")),  # not sampled
        (f" {GOOD}\t", TraceParent(TRACE, SPAN, "01")),  # optional white space of a header
        (f"01-{TRACE}-{SPAN}-01-future", TraceParent(TRACE, SPAN, "01")),  # later version
        (f"01-{TRACE}-{SPAN}-01", TraceParent(TRACE, SPAN, "01")),
        (f"00-{TRACE}-{SPAN}-01-extra", None),  # version 00 has exactly four fields
        (f"01-{TRACE}-{SPAN}-01x", None),  # a later version's fields follow a dash
        (f"ff-{TRACE}-{SPAN}-01", None),  # version ff is invalid
        (f"00-{TRACE.upper()}-{SPAN}-01", None),  # lower-case hex only
        (f"00-{'0' * 32}-{SPAN}-01", None),  # all-zero trace id
        (f"00-{TRACE}-{'0' * 16}-01", None),  # all-zero parent id
        (f"00-{TRACE[:-1]}-{SPAN}-01", None),
        (f"00-{TRACE}-{SPAN}-0g", None),
        (f"00_{TRACE}-{SPAN}-01", None),
        ("00-ab-01", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_parse(value: object, expected: TraceParent | None) -> None:
    assert parse(value) == expected


def test_a_new_trace_is_random_valid_and_sampled() -> None:
    traces = {new_trace() for _ in range(1000)}
    assert len({t.trace_id for t in traces}) == 1000
    assert all(parse(str(t)) == t and t.flags == "01" for t in traces)


@pytest.mark.parametrize(
    ("traceparent", "tracestate", "kept_parent", "kept_state"),
    [
        (GOOD, "congo=t61rcWkgMzE", True, "congo=t61rcWkgMzE"),
        (GOOD, None, True, None),
        (GOOD, "x" * 513, True, None),  # longer than W3C asks anyone to keep
        (GOOD, "bad\nstate", True, None),
        ("00-ab-01", "congo=t61rcWkgMzE", False, None),  # a bad parent takes its state along
        (None, "congo=t61rcWkgMzE", False, None),
    ],
)
def test_incoming_context_is_kept_when_valid_else_a_new_trace_starts(
    traceparent: str | None, tracestate: str | None, kept_parent: bool, kept_state: str | None
) -> None:
    found = trace_extensions(traceparent, tracestate)
    assert parse(found["traceparent"]) is not None
    assert (found["traceparent"] == GOOD) is kept_parent
    assert found.get("tracestate") == kept_state


def test_emitted_events_continue_the_trace_under_the_attempts_span() -> None:
    parent = Event(type="order.created", id="ev-1",
                   extensions={"traceparent": GOOD, "tracestate": "a=1"})
    # A handler cannot choose its events' parent: what it set is replaced.
    forged = Event(type="order.paid", id="ev-2",
                   extensions={"fnrunparent": "someone-else", "traceparent": "00-x"})
    second = Event(type="order.shipped", id="ev-3")
    out = emitted([forged, second], parent, "pay", 2)
    span = attempt_span("ev-1", "pay", 2)
    for event in out:
        assert event.extensions["traceparent"] == f"00-{TRACE}-{span}-01"
        assert event.extensions["fnrunparent"] == "ev-1"
        assert event.extensions["tracestate"] == "a=1"
    assert [e.id for e in out] == ["ev-2", "ev-3"]


@pytest.mark.parametrize(
    ("a", "b"),
    [(("ev-1", "pay", 1), ("ev-1", "pay", 2)),  # a retry is another span
     (("ev-1", "pay", 1), ("ev-1", "ship", 1)),  # so is another function's delivery
     (("ev-1", "pay", 1), ("ev-2", "pay", 1))],
)
def test_each_attempt_has_its_own_stable_span(a: tuple[str, str, int],
                                              b: tuple[str, str, int]) -> None:
    assert attempt_span(*a) == attempt_span(*a) != attempt_span(*b)
    assert parse(f"00-{TRACE}-{attempt_span(*a)}-01") is not None


def test_events_of_a_parent_without_a_trace_start_one_and_still_name_it() -> None:
    [child] = emitted([Event(type="b.c")], Event(type="a.b", id="old"), "f", 1)
    assert parse(child.extensions["traceparent"]) is not None
    assert child.extensions["fnrunparent"] == "old"


@pytest.mark.parametrize(
    ("attrs", "kept"),
    [({"traceparent": GOOD, "tracestate": "a=1"}, True), ({"traceparent": "00-bad"}, False),
     ({}, False)],
)
def test_posted_cloudevents_keep_a_valid_traceparent_else_get_a_new_one(
    attrs: dict[str, str], kept: bool
) -> None:
    raw = {"specversion": "1.0", "id": "e", "source": "/s", "type": "a.b", **attrs}
    event = cloudevents.structured(raw)
    assert parse(event.extensions["traceparent"]) is not None
    assert (event.extensions["traceparent"] == GOOD) is kept
    assert event.extensions.get("tracestate") == ("a=1" if kept else None)
    headers = {f"ce-{k}": v for k, v in raw.items()}
    binary = cloudevents.binary(headers, b"")
    assert (binary.extensions["traceparent"] == GOOD) is kept
