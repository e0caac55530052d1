"""The trace tree, built from tables of events and run records (no store)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.events import Event
from runtime.store.base import RunRecord
from runtime.tracing.tree import Limits, build, lines

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def event(event_id: str, type: str = "a.b", parent: str | None = None) -> Event:
    extensions = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
    if parent:
        extensions["fnrunparent"] = parent
    return Event(type=type, id=event_id, time=datetime(2026, 12, 8, tzinfo=UTC),
                 extensions=extensions)


def run(event_id: str, function: str, attempt: int = 1, status: str = "ok",
        emitted: tuple[str, ...] = (), started: float = 100.0, duration: float = 0.012,
        error: str | None = None) -> RunRecord:
    return RunRecord(
        invocation=f"{function}-{event_id}-{attempt}", event_id=event_id, event_type="a.b",
        function=function, attempt=attempt, status=status, started=started + attempt,
        duration=duration, error=error, traceback=None, result=None, emitted=emitted, logs=(),
        seq=attempt)


def shape(node: dict[str, Any]) -> Any:
    """The tree as nested tuples: (event id, [(function, [(attempt, outcome, [children])])])."""
    if node.get("shown_above") or node.get("cut"):
        return (node["id"], "shown_above" if node.get("shown_above") else "cut")
    return (node["id"], [
        (d["function"], [(a["attempt"], a["outcome"], [shape(c) for c in a["emitted"]])
                         for a in d["attempts"]])
        for d in node["deliveries"]
    ])


CHAIN_EVENTS = {e.id: e for e in [event("w"), event("b1", parent="w"), event("c1", parent="b1")]}
CHAIN_RUNS = [
    run("w", "a", 1, "error", error="RuntimeError: kaboom\nmore"),
    run("w", "a", 2, "ok", emitted=("b1",)),
    run("b1", "b", 1, "ok", emitted=("c1",)),
    run("c1", "c", 1, "ok"),
]


@pytest.mark.parametrize(
    ("events", "runs", "limits", "expected"),
    [
        pytest.param(  # webhook -> a (a retry) -> b -> c
            CHAIN_EVENTS, CHAIN_RUNS, Limits(),
            ("w", [("a", [(1, "error", []), (2, "ok", [
                ("b1", [("b", [(1, "ok", [("c1", [("c", [(1, "ok", [])])])])])])])])]),
            id="chain-with-retry"),
        pytest.param(  # fan-out: two functions get one event, one delivery each
            {"e": event("e")}, [run("e", "x"), run("e", "y", 1, "error"), run("e", "y", 2)],
            Limits(),
            ("e", [("x", [(1, "ok", [])]), ("y", [(1, "error", []), (2, "ok", [])])]),
            id="fan-out"),
        pytest.param(  # stored, not run yet
            {"e": event("e")}, [], Limits(), ("e", []), id="no-runs-yet"),
        pytest.param(  # an event emitted twice under one fixed id is shown once
            {"e": event("e"), "d": event("d")},
            [run("e", "x", emitted=("d",)), run("e", "y", emitted=("d",))], Limits(),
            ("e", [("x", [(1, "ok", [("d", [])])]), ("y", [(1, "ok", [("d", "shown_above")])])]),
            id="seen-twice"),
        pytest.param(  # depth bound
            CHAIN_EVENTS, CHAIN_RUNS, Limits(depth=1),
            ("w", [("a", [(1, "error", []), (2, "ok", [
                ("b1", [("b", [(1, "ok", [("c1", "cut")])])])])])]),
            id="depth-bound"),
        pytest.param(  # size bound
            {"e": event("e")}, [run("e", "x", emitted=("d1", "d2", "d3"))], Limits(events=2),
            ("e", [("x", [(1, "ok", [("d1", []), ("d2", "cut"), ("d3", "cut")])])]),
            id="size-bound"),
    ],
)
def test_tree_shapes(events: dict[str, Event], runs: list[RunRecord], limits: Limits,
                     expected: Any) -> None:
    root = expected[0]
    tree = build(root, events, runs, limits)
    assert tree is not None
    assert shape(tree["root"]) == expected
    assert tree["truncated"] is (limits != Limits())


def test_a_trace_keeps_its_id_outcomes_durations_and_first_error_lines() -> None:
    tree = build("w", CHAIN_EVENTS, CHAIN_RUNS)
    assert tree is not None and tree["trace_id"] == TRACE and tree["events"] == 3
    [delivery] = tree["root"]["deliveries"]
    assert (delivery["outcome"], delivery["duration_ms"]) == ("ok", 24.0)
    failed, retried = delivery["attempts"]
    assert (failed["error"], failed["duration_ms"]) == ("RuntimeError: kaboom", 12.0)
    assert failed["invocation"] == "a-w-1" and retried["error"] is None
    child = retried["emitted"][0]
    assert (child["type"], child["parent"], child["trace_id"]) == ("a.b", "w", TRACE)


def test_unknown_event_is_none_and_a_pruned_one_with_runs_is_missing() -> None:
    assert build("nope", CHAIN_EVENTS, CHAIN_RUNS) is None
    tree = build("gone", {}, [run("gone", "x")])
    assert tree is not None and tree["root"]["missing"] is True and tree["trace_id"] is None


def test_lines_draw_each_event_delivery_and_attempt() -> None:
    tree = build("w", CHAIN_EVENTS, CHAIN_RUNS)
    assert tree is not None
    drawn = lines(tree)
    assert drawn[0] == f"trace {TRACE}"
    assert drawn[1] == "event w a.b"
    assert drawn[2] == "  a  ok  2 attempts  24.0 ms"
    assert drawn[3] == "    #1 error  12.0 ms  a-w-1  RuntimeError: kaboom"
    assert drawn[4] == "    #2 ok  12.0 ms  a-w-2"
    assert drawn[5] == "      event b1 a.b"
    assert drawn[-1] == " " * 16 + "#1 ok  12.0 ms  c-c1-1"
