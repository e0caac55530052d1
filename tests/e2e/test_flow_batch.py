"""batch: {max_size, max_wait} (SPEC 12) end to end on both stores: the handler gets
lists of at most max_size, a lone event waits at most max_wait, `{"failed": [ids]}`
retries only those, and a raise retries the whole batch."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.e2e.harness import Project, wait_until

CODE = '''
import os, time, uuid

def handle(events, ctx):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    batch, start, failed = uuid.uuid4().hex, time.time(), []
    first_time = lambda e: not os.path.exists(os.path.join(here, "seen-" + e.id))
    boom = any(e.data.get("boom") and first_time(e) for e in events)
    for e in events:
        bad = bool(e.data.get("bad")) and first_time(e)
        if bad:
            failed.append(e.id)
        if (bad or e.data.get("boom")) and first_time(e):
            open(os.path.join(here, "seen-" + e.id), "w").close()
        record(e, ctx, batch=batch, size=len(events), start=start, ok=not bad and not boom)
    if boom:
        raise RuntimeError("the whole batch fails")
    return {"failed": failed}
'''


@pytest.mark.timeout(120)
def test_batches_partial_failure_and_lone_event(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("bulk", """
        functions:
          bulk:
            handler: bulk.py:handle
            triggers: [{event: flow.bulk}]
            batch: {max_size: 10, max_wait: 200ms}
            concurrency: 2
            retry: {max_attempts: 3, backoff: 100ms}
        """, CODE)
    project.start()
    ids = project.publish([{"type": "flow.bulk", "data": {"n": i, "bad": i % 20 == 3}}
                           for i in range(95)])
    bad = {ids[i] for i in range(95) if i % 20 == 3}

    def ok_ids() -> Counter[str]:
        return Counter(c["id"] for c in project.calls() if c["ok"])

    wait_until(lambda: len(ok_ids()) >= 95, timeout=60)
    calls = project.calls()
    sizes = {c["batch"]: c["size"] for c in calls}
    assert max(sizes.values()) == 10 and len(sizes) < 95, "not batched up to max_size"
    runs = Counter(c["id"] for c in calls)
    assert all(n == 1 for n in ok_ids().values())
    assert {i for i, n in runs.items() if n > 1} == bad, "only the failed ids run again"
    assert all(runs[i] == 2 for i in bad)

    sent = time.time()  # a lone event: no batch fills, it waits max_wait, not more
    [lone] = project.publish([{"type": "flow.bulk", "data": {"n": -1}}])
    stored = time.time()  # its delivery is in the store (and the buffer) by now
    wait_until(lambda: lone in ok_ids(), timeout=10)
    [run] = [c for c in project.calls() if c["id"] == lone]
    assert run["size"] == 1 and run["start"] - sent >= 0.15
    assert run["start"] - stored <= 0.2 + 0.5

    boom = project.publish([{"type": "flow.bulk", "data": {"n": -2 - i, "boom": i == 0}}
                            for i in range(3)])
    wait_until(lambda: all(i in ok_ids() for i in boom), timeout=20)
    runs = Counter(c["id"] for c in project.calls())
    first = [c for c in project.calls() if c["id"] in boom and not c["ok"]]
    assert {c["id"] for c in first} == set(boom)
    assert all(runs[i] == 2 for i in boom), "a raise fails (and retries) the whole batch"
