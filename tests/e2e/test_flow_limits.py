"""concurrency: {limit, per_key} and rate_limit (SPEC 12) end to end on both stores,
checked from the intervals the handlers record."""

from __future__ import annotations

import pytest

from tests.e2e.flow_checks import (
    FLOW_RECORDER,
    FULL,
    by_key,
    max_overlap,
    paced_functions,
    starts_within,
    within_rate,
)
from tests.e2e.harness import Project, wait_until


def done(project: Project, count: int) -> bool:
    return len({c["id"] for c in project.calls() if c["ok"]}) >= count


@pytest.mark.timeout(120)
def test_per_key_one_and_limit_four_are_never_exceeded(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("bounded", """
        functions:
          bounded:
            handler: bounded.py:handle
            triggers: [{event: flow.bounded}]
            key: data.k
            concurrency: {limit: 4, per_key: 1}
        """, FLOW_RECORDER + """
def handle(event, ctx):
    run(event, ctx, pause=0.02)
""")
    project.start()
    items = [{"type": "flow.bounded", "data": {"k": f"k{i % 10}", "seq": i}} for i in range(200)]
    ids = project.publish(items)
    wait_until(lambda: done(project, len(ids)), timeout=90)
    calls = project.calls()
    assert sorted(c["id"] for c in calls) == sorted(ids)  # each once: none lost, none twice
    for key, attempts in by_key(calls).items():
        assert max_overlap(attempts) == 1, f"two runs of key {key} at once"
    assert max_overlap(calls) == 4, "the limit of 4 was exceeded or never reached"


RATE = 20 if FULL else 8
SECONDS = 10 if FULL else 2


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rate_limit_holds_starts_per_period_and_drops_none(
    project_on_each_store: Project,
) -> None:
    """Global rate on one function, per-key rate on another (`key:` set): starts in
    each second stay within the limit, excess waits, nothing is dropped."""
    project = project_on_each_store
    project.add("paced", paced_functions(RATE), FLOW_RECORDER + """
def handle(event, ctx):
    run(event, ctx)
""")
    project.start()
    # Warm the workers first: the budget is spent at claim, and a cold worker's
    # start would shift its handler's start past the next period's claims.
    project.publish([{"type": "flow.paced", "data": {"k": f"k{i % 2}", "seq": -1}}
                     for i in range(8)])
    wait_until(lambda: len(project.calls()) >= 16, timeout=30)
    count = RATE * (SECONDS + 1)
    items = [{"type": "flow.paced", "data": {"k": f"k{i % 2}", "seq": i}} for i in range(count)]
    ids = project.publish(items)
    wait_until(lambda: len([c for c in project.calls() if c["seq"] >= 0]) >= 2 * count,
               timeout=SECONDS * 3 + 30)
    calls = [c for c in project.calls() if c["seq"] >= 0]
    for fn in ("paced", "paced-by-key"):
        runs = [c for c in calls if c["fn"] == fn]
        assert sorted(c["id"] for c in runs) == sorted(ids), fn  # each once
        span = max(c["start"] for c in runs) - min(c["start"] for c in runs)
        assert span >= SECONDS - 0.1, (fn, span)  # excess waited
    paced = [c for c in calls if c["fn"] == "paced"]
    assert within_rate(paced, RATE)
    keyed = [c for c in calls if c["fn"] == "paced-by-key"]
    for key, runs in by_key(keyed).items():
        assert within_rate(runs, RATE // 2), key
    assert starts_within(keyed, 0.75) > RATE // 2, "keys did not get a budget each"
