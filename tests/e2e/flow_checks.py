"""Checks of flow-control runs from the intervals handlers record (tests/e2e/test_flow_*)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

FULL = os.environ.get("FNRUN_FULL_FLOW") == "1"
"""FNRUN_FULL_FLOW=1 runs the issue's full counts (10,000 events); CI runs fewer."""

FLOW_RECORDER = '''
import time

def run(event, ctx, fail=False, pause=0.0, key=None, mark=False, **extra):
    """Record (key, seq, start, end) of this attempt, and with `mark` a line with
    phase "start" as it starts too; raise after recording if `fail`."""
    start = time.time()
    key = event.data.get("k") if key is None else key
    if mark:
        record(event, ctx, phase="start", key=key, seq=event.data.get("seq"), start=start,
               **extra)
    if pause:
        time.sleep(pause)
    record(event, ctx, key=key, seq=event.data.get("seq"), start=start, end=time.time(),
           ok=not fail, **extra)
    if fail:
        raise RuntimeError("poison")
'''

def paced_functions(rate: int) -> str:
    """Two paced functions on `flow.paced`: `paced` with one budget of `rate` starts a
    second, `paced-by-key` with `rate // 2` a second per `data.k`."""
    return f"""
        functions:
          paced:
            handler: paced.py:handle
            triggers: [{{event: flow.paced}}]
            concurrency: 4
            rate_limit: {{limit: {rate}, period: 1s}}
          paced-by-key:
            handler: paced.py:handle
            triggers: [{{event: flow.paced}}]
            key: data.k
            concurrency: 4
            rate_limit: {{limit: {rate // 2}, period: 1s}}
        """


NODE_OF_WORKER = '''
import os as _os

def _supervisor():
    """The pid of the `fnrun run` above this worker: the node it works for."""
    pid = _os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\\0")
        if argv[1:4] == [b"-m", b"runtime", b"run"]:
            return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rpartition(")")[2].split()[1])
    return 0

NODE = _supervisor()
'''
"""Handlers of cluster tests pass `node=NODE` to `run`: which supervisor ran each attempt."""


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


DYING = 1.0
"""Most seconds a killed node's workers may outlive it: they end when they see its end
(their lifeline), and one may start a dispatch the node sent just before. Its runs
count against the limits until its heartbeat expires (7.5 s or more), so a cut
attempt counted as running this long overlaps nothing it should not."""


def attempts_through_kills(lines: list[dict[str, Any]], killed: dict[int, float],
                           ) -> list[dict[str, Any]]:
    """Every attempt of handlers that `run(..., mark=True, node=NODE)`: each end line,
    and each start line without one, which must be an attempt cut by the kill -9 of
    its node (`killed`: node -> when it was gone) and ends `DYING` later at most."""
    ended = {(c["id"], c["attempt"], c["pid"]) for c in lines if "end" in c}
    out = [c for c in lines if "end" in c]
    for start in (c for c in lines if c.get("phase") == "start"):
        if (start["id"], start["attempt"], start["pid"]) in ended:
            continue
        node = start["node"]
        assert node in killed and start["start"] <= killed[node] + DYING, f"never ended: {start}"
        out.append({**start, "end": killed[node] + DYING, "ok": False, "cut": True})
    return out


def starts_within(calls: list[dict[str, Any]], window: float) -> int:
    """Most attempts that started within any `window` seconds."""
    starts = sorted(c["start"] for c in calls)
    most, first = 0, 0
    for last, at in enumerate(starts):
        while at - starts[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def within_rate(calls: list[dict[str, Any]], limit: int, late: float = 0.25) -> bool:
    """Starts within `limit` per second. The budget is spent when a node claims a
    delivery, and its handler starts a dispatch later (a few ms, more on a loaded
    machine), which shifts a start into the next second now and then: so any
    1 - `late` s holds at most `limit` starts, and the whole run at most `limit` a second."""
    starts = sorted(c["start"] for c in calls)
    seconds = round(starts[-1] - starts[0]) + 1  # n bursts span n - 1 periods, give or take jitter
    return starts_within(calls, 1 - late) <= limit and len(starts) <= limit * seconds
