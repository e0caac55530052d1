"""order: key across 3 supervisors on one Redis (SPEC 12 and 9): one run per key at a
time for the whole cluster, in publish order; with FNRUN_FULL_FLOW=1 (10,000 events)
through a kill -9 of one node too, whose runs are taken over once its heartbeat is
gone (10 s, so CI leaves it to test_flow_order's kills on Redis)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.e2e.flow_checks import FULL, assert_key_order, max_overlap
from tests.e2e.harness import Project, free_port, wait_until
from tests.e2e.test_flow_order import events, ordered_project
from tests.services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

SHARED = redis_url(12)


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


Node = tuple[subprocess.Popen[bytes], int]


def start_nodes(project: Project, store: str, count: int) -> list[Node]:
    """`count` more `fnrun run` nodes sharing `store`, started together; waits for health."""
    nodes: list[Node] = []
    for _ in range(count):
        port = free_port()
        with open(project.root / f"supervisor-{len(project.procs)}.log", "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "runtime", "run", "--project", str(project.root),
                 "--store", store, "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        project.procs.append(proc)
        nodes.append((proc, port))

    def up(proc: subprocess.Popen[bytes], port: int) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fnrun run exited {proc.returncode}:\n{project.output()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(lambda: all(up(proc, port) for proc, port in nodes), timeout=60)
    return nodes


def test_order_key_holds_across_three_nodes(project: Project, flow_redis: str) -> None:
    ordered_project(project)
    nodes = start_nodes(project, flow_redis, 3)
    project.port = nodes[0][1]
    items, expected = events()
    project.publish(items)
    wait_until(lambda: sum(1 for c in project.calls() if c["ok"]) >= len(items) // 3,
               timeout=120)
    if FULL:  # its runs wait for its heartbeat to expire (10 s), then move
        project.kill9(nodes[1][0])

    def all_done() -> bool:
        done = {(c["key"], c["seq"]) for c in project.calls() if c["ok"]}
        return len(done) == len(items)

    wait_until(all_done, timeout=240 if FULL else 120)
    calls = project.calls()
    assert_key_order(calls, expected)
    assert len({c["pid"] for c in calls}) >= 3, "the work was not shared"
    assert max_overlap(calls) >= 2
