"""debounce (SPEC 12) end to end on both stores: a burst per key runs once, with its
last event, after the quiet period; the others are superseded, visible in history."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.flow_checks import FLOW_RECORDER
from tests.e2e.harness import Project, fnrun, wait_until

KEYS, BURST, QUIET = 5, 20, 0.3


@pytest.mark.timeout(120)
def test_debounce_runs_the_last_of_each_burst(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("quiet", """
        functions:
          quiet:
            handler: quiet.py:handle
            triggers: [{event: flow.quiet}]
            key: data.k
            debounce: 300ms
            concurrency: 4
        """, FLOW_RECORDER + """
def handle(event, ctx):
    run(event, ctx)
""")
    project.start()
    for burst in range(2):  # the second burst after the first ran: a new quiet period
        sent = time.time()
        project.publish([{"type": "flow.quiet", "data": {"k": f"k{k}", "seq": seq, "b": burst}}
                         for seq in range(BURST) for k in range(KEYS)])
        wait_until(lambda n=burst: len(project.calls()) >= KEYS * (n + 1), timeout=30)
        runs = [c for c in project.calls() if c["start"] >= sent]
        assert sorted(c["key"] for c in runs) == [f"k{k}" for k in range(KEYS)]
        assert {c["seq"] for c in runs} == {BURST - 1}, "not the last event of the burst"
        assert min(c["start"] for c in runs) >= sent + QUIET - 0.05
    time.sleep(QUIET + 0.3)  # nothing else falls due: a late run would show up by now
    assert len(project.calls()) == 2 * KEYS
    out = fnrun("history", "--function", "quiet", "--limit", "500", "--json",
                "--project", str(project.root)).stdout
    statuses = [row["outcome"] for row in json.loads(out)]
    assert statuses.count("superseded") == 2 * KEYS * (BURST - 1)
    assert statuses.count("ok") == 2 * KEYS
