"""Flow rules across 3 supervisors on one Redis (SPEC 12 and 9), counted from what the
handlers record (start, end, key, sequence and the node that ran each attempt):

- `order: key`: one run per key at a time for the whole cluster, in publish order,
  through two kill -9s of a node (each restarted);
- `concurrency: {limit: 4, per_key: 1}`: never two runs of a key, never more than 4 in
  all, through a kill -9 of the node running a slow event, which another node takes
  over once the dead node's heartbeat is gone (10 s), none lost;
- `rate_limit`: one budget for the cluster, per key when `key:` is set;
- `debounce`: bursts published to different nodes run once per key, the last event,
  through a kill -9 during the quiet period and a restart.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.flow_checks import (
    DYING,
    FLOW_RECORDER,
    FULL,
    NODE_OF_WORKER,
    assert_key_order,
    attempts_through_kills,
    by_key,
    max_overlap,
    paced_functions,
    starts_within,
    within_rate,
)
from tests.e2e.harness import Project, fnrun, free_port, wait_until
from tests.e2e.test_flow_order import events, ordered_project
from tests.services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

SHARED = redis_url(12)
HEARTBEAT = 10.0
"""A killed node's runs move once its heartbeat expires: 7.5 to 10 s after the kill
(less if a beat came late on a loaded machine); a lease would take 60 s or more."""


@pytest.fixture
def flow_redis(service_missing: object) -> Iterator[str]:
    """DB 12 of the shared Redis, flushed before and after."""
    try:
        with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {SHARED}: {exc}")  # type: ignore[operator]
    yield SHARED
    with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
        client.flushdb()


@dataclass(frozen=True)
class Node:
    """One `fnrun run` of the cluster: its process (its pid is what handlers record
    as `node`) and its HTTP port."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_nodes(project: Project, store: str, count: int) -> list[Node]:
    """`count` more `fnrun run` nodes sharing `store`, started together; waits for health."""
    nodes = [launch(project, store) for _ in range(count)]
    wait_until(lambda: all(healthy(project, node) for node in nodes), timeout=60)
    return nodes


def healthy(project: Project, node: Node) -> bool:
    """Whether `node` answers /_/health; fails the test if it exited."""
    if node.proc.poll() is not None:
        raise AssertionError(f"fnrun run exited {node.proc.returncode}:\n{project.output()}")
    try:
        return httpx.get(f"http://127.0.0.1:{node.port}/_/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def launch(project: Project, store: str) -> Node:
    """One more `fnrun run` node sharing `store`, not waited for."""
    port = free_port()
    return Node(project.launch("--store", store, port=port), port)


def publish_to_each(nodes: list[Node], items: list[dict[str, Any]], chunk: int) -> list[str]:
    """Publish `items` as CloudEvents in chunks of `chunk`, each to the next node in turn,
    on one HTTP client (a client costs ~0.1 s to make); the ids acknowledged."""
    ids: list[str] = []
    events = [{"specversion": "1.0", "source": "tests", "id": str(uuid.uuid4()), **e}
              for e in items]  # fmt: skip
    with httpx.Client(timeout=30) as client:
        for turn, start in enumerate(range(0, len(events), chunk)):
            response = client.post(
                f"http://127.0.0.1:{nodes[turn % len(nodes)].port}/_/events",
                content=json.dumps(events[start:start + chunk]),
                headers={"content-type": "application/cloudevents-batch+json"},
            )
            assert response.status_code == 202, response.text
            ids += response.json()["ids"]
    return ids


def kill9(project: Project, node: Node) -> float:
    """kill -9 `node`; when it was gone, by the handlers' clock."""
    project.kill9(node.proc)
    return time.time()


def test_order_key_holds_across_three_nodes_through_two_kills(
    project: Project, flow_redis: str,
) -> None:
    """Two nodes killed, at a third and at half of the work, each restarted at once:
    their keys wait for their heartbeats (the waits overlap), the others flow on."""
    ordered_project(project)
    nodes = start_nodes(project, flow_redis, 3)
    items, expected = events()
    publish_to_each(nodes, items, 250)

    def successes() -> int:
        return sum(1 for c in project.calls() if c["ok"])

    for share, victim in ((3, 1), (2, 2)):
        wait_until(lambda s=share: successes() >= len(items) // s, timeout=120)
        kill9(project, nodes[victim])
        nodes[victim] = launch(project, flow_redis)  # joins when it is up

    def all_done() -> bool:
        done = {(c["key"], c["seq"]) for c in project.calls() if c["ok"]}
        return len(done) == len(items)

    wait_until(all_done, timeout=240 if FULL else 120)
    calls = project.calls()
    assert_key_order(calls, expected)
    assert len({c["pid"] for c in calls}) >= 3, "the work was not shared"
    assert max_overlap(calls) >= 2


BOUNDED_EVENTS, BOUNDED_KEYS = 480, 12


def test_per_key_one_and_limit_four_hold_across_three_nodes_through_kill9(
    project: Project, flow_redis: str,
) -> None:
    project.add("bounded", """
        functions:
          bounded:
            handler: bounded.py:handle
            triggers: [{event: flow.bounded}]
            key: data.k
            concurrency: {limit: 4, per_key: 1}
        """, FLOW_RECORDER + NODE_OF_WORKER + """
def handle(event, ctx):
    slow = event.data.get("slow") and ctx.attempt == 1
    run(event, ctx, pause=4.0 if slow else 0.03, mark=True, node=NODE)
""")
    nodes = start_nodes(project, flow_redis, 3)
    items = [{"type": "flow.bounded", "data": {"k": f"k{i % BOUNDED_KEYS}", "seq": i}}
             for i in range(BOUNDED_EVENTS)]  # fmt: skip
    half = BOUNDED_EVENTS // 2
    # Half the events, then a slow one under a key of its own, which starts at once; the
    # node running it is killed, and the other half published.
    ids = publish_to_each(nodes, items[:half], 40)
    ids += publish_to_each(
        nodes, [{"type": "flow.bounded", "data": {"k": "slow", "seq": -1, "slow": True}}], 1)

    def slow_started() -> dict[str, Any] | None:
        return next((c for c in project.calls() if c["seq"] == -1), None)

    victim = next(n for n in nodes if n.pid == wait_until(slow_started, timeout=60)["node"])
    killed = {victim.pid: kill9(project, victim)}
    ids += publish_to_each([n for n in nodes if n != victim], items[half:], 40)

    def all_done() -> bool:
        return {c["id"] for c in project.calls() if c.get("ok")} >= set(ids)

    wait_until(all_done, timeout=120)
    lines = project.calls()
    attempts = attempts_through_kills(lines, killed)
    for key, runs in by_key(attempts).items():
        assert max_overlap(runs) == 1, f"two runs of key {key} at once"
    assert max_overlap(attempts) == 4, "the limit of 4 was exceeded or never reached"
    assert {c["node"] for c in attempts} == {n.pid for n in nodes}, "the work was not shared"

    # None lost; one more success only for a run whose node died before settling it.
    successes = Counter(c["id"] for c in attempts if c["ok"])
    assert set(successes) == set(ids)
    for twice in (i for i, n in successes.items() if n > 1):
        first = min((c for c in attempts if c["id"] == twice and c["ok"]),
                    key=lambda c: c["start"])
        assert first["node"] == victim.pid and first["end"] <= killed[victim.pid] + DYING, first
    # The dead node's runs died with it, and the slow one moved once its heartbeat went.
    assert all(c["end"] <= killed[victim.pid] + DYING for c in lines
               if c["node"] == victim.pid and "end" in c)
    slow = sorted((c for c in attempts if c["seq"] == -1), key=lambda c: c["start"])
    assert [(c.get("cut", False), c["node"] == victim.pid) for c in slow] == [
        (True, True), (False, False)], slow
    assert slow[1]["ok"] and slow[1]["attempt"] == 2
    assert slow[1]["start"] >= killed[victim.pid] + HEARTBEAT / 2, "taken over early"
    meanwhile = [c for c in attempts if killed[victim.pid] < c["start"] < slow[1]["start"]]
    assert len(meanwhile) >= 20, "other keys waited for the dead node"


RATE, SECONDS = 8, 10


def test_rate_limit_is_one_budget_for_three_nodes(project: Project, flow_redis: str) -> None:
    """Global rate on one function, per key on another: any 0.5 s of the 10 s holds
    at most `limit` starts of the whole cluster, and the whole run `limit` a second
    (three budgets would allow 3x: the work would take a third of the time),
    nothing is dropped, and each key gets a budget of its own. A start may come up
    to 0.5 s after its claim spent the budget (three nodes, each dispatching when
    it can: with 0.25 s, as test_flow_limits allows one node, 1 run in 7 under
    `pytest -n 2` failed)."""
    project.add("paced", paced_functions(RATE), FLOW_RECORDER + NODE_OF_WORKER + """
def handle(event, ctx):
    run(event, ctx, node=NODE)
""")
    nodes = start_nodes(project, flow_redis, 3)
    # Warm each node's workers first (the budget is spent at claim; a cold worker's
    # start would shift its handler's start past the next period's claims).
    warm = [{"type": "flow.paced", "data": {"k": f"k{i % 2}", "seq": -1}} for i in range(24)]
    publish_to_each(nodes, warm, 8)
    wait_until(lambda: len(project.calls()) >= 48, timeout=30)
    count = RATE * (SECONDS + 1)
    items = [{"type": "flow.paced", "data": {"k": f"k{i % 2}", "seq": i}} for i in range(count)]
    ids = publish_to_each(nodes, items, 8)
    wait_until(lambda: len([c for c in project.calls() if c["seq"] >= 0]) >= 2 * count,
               timeout=SECONDS * 3 + 30)
    calls = [c for c in project.calls() if c["seq"] >= 0]
    for fn in ("paced", "paced-by-key"):
        runs = [c for c in calls if c["fn"] == fn]
        assert sorted(c["id"] for c in runs) == sorted(ids), fn  # each once
        span = max(c["start"] for c in runs) - min(c["start"] for c in runs)
        assert span >= SECONDS - 0.1, (fn, span)  # excess waited
        assert len({c["node"] for c in runs}) >= 2, f"{fn}: one node did all the work"
    paced = [c for c in calls if c["fn"] == "paced"]
    assert within_rate(paced, RATE, late=0.5)
    keyed = [c for c in calls if c["fn"] == "paced-by-key"]
    for key, runs in by_key(keyed).items():
        assert within_rate(runs, RATE // 2, late=0.5), key
    assert starts_within(keyed, 0.75) > RATE // 2, "keys did not get a budget each"


KEYS, BURST, QUIET = 5, 20, 1.0


def test_debounce_is_one_window_for_three_nodes(project: Project, flow_redis: str) -> None:
    """Each burst's events go to the nodes in turn; a node is killed during the first
    quiet period and restarted for the second burst. Each key runs once per burst,
    with its last event, on a live node; the others are superseded, in history."""
    project.add("quiet", f"""
        functions:
          quiet:
            handler: quiet.py:handle
            triggers: [{{event: flow.quiet}}]
            key: data.k
            debounce: {int(QUIET * 1000)}ms
            concurrency: 4
        """, FLOW_RECORDER + NODE_OF_WORKER + """
def handle(event, ctx):
    run(event, ctx, node=NODE)
""")
    nodes = start_nodes(project, flow_redis, 3)
    killed = nodes[2]
    for burst in range(2):
        items = [{"type": "flow.quiet", "data": {"k": f"k{k}", "seq": seq, "b": burst}}
                 for seq in range(BURST) for k in range(KEYS)]  # fmt: skip
        sent = time.time()
        publish_to_each(nodes, items, KEYS)  # one event per key to each node in turn
        if burst == 0:
            kill9(project, killed)
            nodes[2] = launch(project, flow_redis)  # joins when it is up
        wait_until(lambda n=burst: len(project.calls()) >= KEYS * (n + 1), timeout=30)
        runs = [c for c in project.calls() if c["start"] >= sent]
        assert sorted(c["key"] for c in runs) == [f"k{k}" for k in range(KEYS)]
        assert {c["seq"] for c in runs} == {BURST - 1}, "not the last event of the burst"
        assert min(c["start"] for c in runs) >= sent + QUIET - 0.05
        assert killed.pid not in {c["node"] for c in runs}
        wait_until(lambda: all(healthy(project, node) for node in nodes), timeout=60)
    time.sleep(QUIET + 0.5)  # nothing else falls due: a late run would show up by now
    assert len(project.calls()) == 2 * KEYS
    out = fnrun("history", "--function", "quiet", "--limit", "500", "--json",
                "--store", flow_redis, "--project", str(project.root)).stdout
    outcomes = Counter(row["outcome"] for row in json.loads(out))
    assert outcomes == {"superseded": 2 * KEYS * (BURST - 1), "ok": 2 * KEYS}
