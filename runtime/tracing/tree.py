"""The tree of what one event caused: event -> deliveries -> attempts -> emitted events -> ...

`build` is pure (the stored events and run records in, a JSON-safe tree
out) and bounded: at most `Limits.depth` levels of events and
`Limits.events` events, the rest marked as cut. `collect` is its thin shell
that reads those records from a store, level by level, within the same
bounds; `lines` draws the tree for `fnrun trace`.

A delivery is one function's claim on an event, shown through its attempts
(run records): a retry is a second attempt under the same delivery. An
attempt's emitted events (committed with its success) hang under it. An
event met twice (a handler emitting a fixed id it already emitted) is shown
once, and named where it is met again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runtime.events import Event
from runtime.store.base import RunRecord, Store
from runtime.tracing.context import PARENT, TRACEPARENT, trace_id


@dataclass(frozen=True)
class Limits:
    """How much of a trace one answer holds."""

    depth: int = 16
    """Levels of events below the root."""
    events: int = 200
    """Events in all."""


def build(
    root: str, events: Mapping[str, Event], runs: Sequence[RunRecord], limits: Limits = Limits()
) -> dict[str, Any] | None:
    """The trace tree of event `root`, or None when nothing of it is stored.

    Args:
        events: stored events by id (a pruned one may be missing).
        runs: run records of any of these events, in any order.
    """
    if root not in events and not any(r.event_id == root for r in runs):
        return None
    by_event: dict[str, list[RunRecord]] = {}
    for run in sorted(runs, key=lambda r: (r.started, r.attempt)):
        by_event.setdefault(run.event_id, []).append(run)
    walk = _Walk(events, by_event, limits)
    tree = walk.event(root, 0)
    first = events.get(root)
    return {
        "trace_id": trace_id(first) if first is not None else None,
        "events": walk.count,
        "truncated": walk.truncated,
        "root": tree,
    }


class _Walk:
    """One depth-first walk; `seen` and `count` bound it."""

    def __init__(self, events: Mapping[str, Event], runs: Mapping[str, list[RunRecord]],
                 limits: Limits) -> None:
        self.events, self.runs, self.limits = events, runs, limits
        self.seen: set[str] = set()
        self.count = 0
        self.truncated = False

    def event(self, event_id: str, depth: int) -> dict[str, Any]:
        if event_id in self.seen:
            return {"id": event_id, "shown_above": True}
        if depth > self.limits.depth or self.count >= self.limits.events:
            self.truncated = True
            return {"id": event_id, "cut": True}
        self.seen.add(event_id)
        self.count += 1
        node = _event_json(event_id, self.events.get(event_id))
        node["deliveries"] = [self.delivery(fn, attempts, depth)
                              for fn, attempts in _by_function(self.runs.get(event_id, []))]
        return node

    def delivery(self, function: str, attempts: list[RunRecord], depth: int) -> dict[str, Any]:
        return {
            "function": function,
            "outcome": attempts[-1].status,
            "attempts": [self.attempt(run, depth) for run in attempts],
            "duration_ms": _ms(sum(run.duration for run in attempts)),
        }

    def attempt(self, run: RunRecord, depth: int) -> dict[str, Any]:
        return {
            "invocation": run.invocation,
            "attempt": run.attempt,
            "outcome": run.status,
            "started": datetime.fromtimestamp(run.started, UTC).isoformat(),
            "duration_ms": _ms(run.duration),
            "error": (run.error or "").partition("\n")[0] or None,
            "emitted": [self.event(child, depth + 1) for child in run.emitted],
        }


def _by_function(runs: list[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    """Attempts grouped per function (one delivery each), in order of first attempt."""
    grouped: dict[str, list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault(run.function, []).append(run)
    return [(fn, sorted(attempts, key=lambda r: (r.attempt, r.started)))
            for fn, attempts in grouped.items()]


def _event_json(event_id: str, event: Event | None) -> dict[str, Any]:
    if event is None:  # pruned, or never stored: its runs may still be kept
        return {"id": event_id, "missing": True}
    return {
        "id": event.id,
        "type": event.type,
        "source": event.source,
        "time": event.time.isoformat(),
        "traceparent": event.extensions.get(TRACEPARENT),
        "trace_id": trace_id(event),
        "parent": event.extensions.get(PARENT),
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def collect(
    store: Store, root: str, limits: Limits = Limits()
) -> tuple[dict[str, Event], list[RunRecord]]:
    """The events and run records `build` needs for `root`'s tree: one
    `runs_for_events` read per level, within `limits`."""
    events: dict[str, Event] = {}
    runs: list[RunRecord] = []
    frontier, depth = [root], 0
    while frontier and depth <= limits.depth and len(events) < limits.events:
        frontier = frontier[: limits.events - len(events)]
        for event_id in frontier:
            event = await store.event(event_id)
            if event is not None:
                events[event_id] = event
        level = await store.runs_for_events(frontier)
        runs += level
        known = set(events) | set(frontier)
        frontier = list(dict.fromkeys(
            child for run in level for child in run.emitted if child not in known))
        depth += 1
    return events, runs


async def trace(store: Store, root: str, limits: Limits = Limits()) -> dict[str, Any] | None:
    """`GET /_/traces/{event}` and `fnrun trace --json`: the tree, or None for an unknown event."""
    events, runs = await collect(store, root, limits)
    return build(root, events, runs, limits)


def lines(tree: Mapping[str, Any]) -> list[str]:
    """`fnrun trace`: the tree drawn for a terminal, one event, delivery or attempt a line."""
    out = [f"trace {tree['trace_id'] or '(none)'}"]
    _event_lines(tree["root"], "", out)
    if tree["truncated"]:
        out.append(f"(cut at {tree['events']} events: fnrun trace --json shows the same)")
    return out


def _event_lines(node: Mapping[str, Any], indent: str, out: list[str]) -> None:
    if node.get("shown_above"):
        out.append(f"{indent}event {node['id']} (shown above)")
        return
    if node.get("cut"):
        out.append(f"{indent}event {node['id']} (not shown: trace too large)")
        return
    kind = node.get("type") or "(not stored: a sync call's event, or past retention)"
    out.append(f"{indent}event {node['id']} {kind}")
    deliveries = node["deliveries"]
    if not deliveries:
        out.append(f"{indent}  (no finished run)")
    for delivery in deliveries:
        count = len(delivery["attempts"])
        tries = f"{count} attempts" if count > 1 else "1 attempt"
        out.append(f"{indent}  {delivery['function']}  {delivery['outcome']}  {tries}  "
                   f"{_duration(delivery['duration_ms'])}")
        for attempt in delivery["attempts"]:
            error = f"  {attempt['error']}" if attempt["error"] else ""
            out.append(f"{indent}    #{attempt['attempt']} {attempt['outcome']}  "
                       f"{_duration(attempt['duration_ms'])}  {attempt['invocation']}{error}")
            for child in attempt["emitted"]:
                _event_lines(child, indent + "      ", out)


def _duration(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"
