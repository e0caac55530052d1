"""Schedule ticks through the real `fnrun run`: kill -9, downtime, restart."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from tests.e2e.harness import Project, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

YAML = """
functions:
  tick:
    handler: tick.py:tick
    triggers:
      - schedule: {cron: "* * * * * *", catch_up: latest, data: {n: 1}}
    retry: {max_attempts: 3, backoff: 100ms}
"""

CODE = """
def tick(event, ctx):
    record(event, ctx, tick=event.time.timestamp(), pastdue=event.extensions.get("pastdue"),
           data=event.data)
    return {"ok": True}
"""


def ticks_after(project: Project, since: float) -> list[float]:
    return sorted({c["tick"] for c in project.calls() if c["tick"] > since})


def test_per_second_ticks_fire_once_across_kill9_and_latest_catches_up_once(
    project_on_each_store: Project,
) -> None:
    project = project_on_each_store
    project.add("tick", YAML, CODE)
    first = project.start()
    wait_until(lambda: len(ticks_after(project, 0)) >= 3, timeout=30)
    project.kill9(first)
    killed = time.time()
    time.sleep(3)  # the downtime under test, not a wait for work
    restarted = time.time()
    project.start()
    wait_until(lambda: len(ticks_after(project, restarted + 1)) >= 3, timeout=30)

    calls = project.calls()
    # no tick fires twice: one id per tick time, one first attempt per id
    ids_by_tick: dict[float, set[str]] = defaultdict(set)
    for call in calls:
        ids_by_tick[call["tick"]].add(call["id"])
        assert call["data"] == {"n": 1}
    assert all(len(ids) == 1 for ids in ids_by_tick.values()), ids_by_tick
    first_attempts = Counter(c["id"] for c in calls if c["attempt"] == 1)
    assert max(first_attempts.values()) == 1, first_attempts
    # ticks are whole seconds of the schedule, never "now + 1 s"
    assert all(t == int(t) for t in ids_by_tick)

    # the dead supervisor fired nothing after it was killed; the new one caught
    # the downtime up exactly once (latest), marked past due
    pastdue = sorted(c["tick"] for c in calls if c["pastdue"])
    assert len(pastdue) == 1, [datetime.fromtimestamp(t).isoformat() for t in pastdue]
    assert killed < pastdue[0] < restarted + 30
    missed_window = [t for t in ids_by_tick if killed + 0.5 < t < restarted - 1.0]
    assert len(missed_window) <= 1, missed_window
