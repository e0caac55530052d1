"""The default key (SPEC 12): the partitionkey extension, set by ctx.emit(key=...),
`fnrun emit --key` and POST /_/events; an event without one runs under the empty key."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.flow_checks import FLOW_RECORDER, assert_key_order
from tests.e2e.harness import Project, fnrun, wait_until


@pytest.mark.timeout(120)
def test_partitionkey_from_every_producer_orders_its_key(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("keys", """
        functions:
          fan:
            handler: keys.py:fan
            triggers: [{event: flow.start}]
          keyed:
            handler: keys.py:keyed
            triggers: [{event: flow.keyed}]
            order: key
            concurrency: {limit: 4}
        """, FLOW_RECORDER + """
def fan(event, ctx):
    for seq in range(10):
        for k in ("k0", "k1"):
            ctx.emit("flow.keyed", {"seq": seq}, key=k)

def keyed(event, ctx):
    run(event, ctx, pause=0.005, key=event.extensions.get("partitionkey", ""))
""")
    project.start()
    for seq in range(3):
        fnrun("emit", "flow.keyed", "--key", "k2", "--data", json.dumps({"seq": seq}),
              "--project", str(project.root))
    project.publish([{"type": "flow.start"}])
    project.publish([{"type": "flow.keyed", "partitionkey": "k3", "data": {"seq": seq}}
                     for seq in range(5)] +
                    [{"type": "flow.keyed", "data": {"seq": seq}} for seq in range(3)])
    with httpx.Client() as client:  # binary mode: the attribute as a ce- header
        response = client.post(project.url("/_/events"), content=json.dumps({"seq": 5}),
                               headers={"ce-specversion": "1.0", "ce-id": "binary-1",
                                        "ce-source": "tests", "ce-type": "flow.keyed",
                                        "ce-partitionkey": "k3",
                                        "content-type": "application/json"})
        assert response.status_code == 202, response.text
    expected = {"k0": list(range(10)), "k1": list(range(10)), "k2": [0, 1, 2],
                "k3": list(range(6)), "": [0, 1, 2]}
    total = sum(len(v) for v in expected.values())
    wait_until(lambda: len([c for c in project.calls() if c["fn"] == "keyed"]) >= total,
               timeout=60)
    calls = [c for c in project.calls() if c["fn"] == "keyed"]
    assert len(calls) == total
    assert_key_order(calls, expected)
