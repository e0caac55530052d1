"""Checks of flow-control runs from the intervals handlers record (tests/e2e/test_flow_*)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

FULL = os.environ.get("FNRUN_FULL_FLOW") == "1"
"""FNRUN_FULL_FLOW=1 runs the issue's full counts (10,000 events); CI runs fewer."""

FLOW_RECORDER = '''
import time

def run(event, ctx, fail=False, pause=0.0, key=None):
    """Record (key, seq, start, end) of this attempt; raise after recording if `fail`."""
    start = time.time()
    if pause:
        time.sleep(pause)
    key = event.data.get("k") if key is None else key
    record(event, ctx, key=key, seq=event.data.get("seq"), start=start, end=time.time(),
           ok=not fail)
    if fail:
        raise RuntimeError("poison")
'''


def by_key(calls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Attempts per key, in the order they started."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in sorted(calls, key=lambda c: c["start"]):
        out[call["key"]].append(call)
    return out


def max_overlap(calls: list[dict[str, Any]]) -> int:
    """Most attempts running at once, from their recorded intervals."""
    edges = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def assert_key_order(calls: list[dict[str, Any]], expected: dict[str, list[int]]) -> None:
    """Per key: attempts never overlap, never go back to an earlier sequence number
    (a repeat is a redelivery of the same one), and every sequence number succeeded."""
    keyed = by_key(calls)
    assert set(keyed) == set(expected)
    for key, attempts in keyed.items():
        for before, after in zip(attempts, attempts[1:], strict=False):
            assert after["start"] >= before["end"] - 0.002, (key, before, after)
            assert after["seq"] >= before["seq"], (key, before, after)
        done = sorted({c["seq"] for c in attempts if c["ok"]})
        assert done == expected[key], key
