"""SPEC section 9, end to end: several `fnrun run` nodes on one Redis.

Nodes share DB 13 of the test Redis (tests/services.py) (flushed around each
test); the restart test runs its own `redis-server` on a free port.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.e2e.harness import Project, RedisServer, free_port, wait_until
from tests.services import redis_url

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]

SHARED = redis_url(13)

WORK = (
    """
    functions:
      work:
        handler: work.py:handle
        triggers: [{event: "job.*"}]
        timeout: 5s
        concurrency: 4
        retry: {max_attempts: 10, backoff: 100ms, max_backoff: 1s}
    """,
    """
    import time

    def handle(event, ctx):
        time.sleep(0.005)  # 12 slots: at most ~2,400/s, so the kill lands mid-drain
        record(event, ctx)
    """,
)


@pytest.fixture
def shared_redis(service_missing: object) -> Iterator[str]:
    """DB 13 of the shared Redis, flushed before and after (never any other DB)."""
    try:
        with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
            client.flushdb()
    except redis.RedisError as exc:
        service_missing(f"Redis is not reachable at {SHARED}: {exc}")  # type: ignore[operator]
    yield SHARED
    with redis.Redis.from_url(SHARED, socket_connect_timeout=1) as client:
        client.flushdb()


def start_node(project: Project, store: str) -> tuple[subprocess.Popen[bytes], int]:
    """One more `fnrun run` on its own port, sharing `store`; waits for health."""
    port = free_port()
    proc = project.launch("--store", store, port=port)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fnrun run exited {proc.returncode}:\n{project.output()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=30)
    return proc, port


def drained(port: int) -> bool:
    functions = httpx.get(f"http://127.0.0.1:{port}/_/functions", timeout=5).json()
    return all(f["pending"] == 0 and f["running"] == 0 for f in functions)


def test_three_nodes_share_10000_events_and_survive_a_kill9(
    project: Project, shared_redis: str
) -> None:
    project.add("work", *WORK)
    nodes = [start_node(project, shared_redis) for _ in range(3)]
    project.port = nodes[0][1]
    ids = set(project.publish({"type": "job.run", "data": i} for i in range(10_000)))
    assert len(ids) == 10_000
    victim = nodes[1][0]
    wait_until(lambda: len(project.calls()) >= 2_000, timeout=120)
    project.kill9(victim)
    assert len(project.calls()) < len(ids), "the drain finished before the kill"
    wait_until(lambda: ids <= set(project.handled("work")) and drained(nodes[2][1]), timeout=180)

    handled = project.handled("work")
    lost = ids - set(handled)
    duplicates = sum(n - 1 for n in handled.values())
    workers = len({c["pid"] for c in project.calls()})
    print(f"\ncluster: 10000 events, lost {len(lost)}, duplicates {duplicates}, workers {workers}")
    assert lost == set()
    assert set(handled) == ids
    # Only deliveries the victim held when it died may run twice.
    assert duplicates <= 4 * 256 + 4


def test_each_schedule_tick_fires_once_across_three_nodes(
    project: Project, shared_redis: str
) -> None:
    project.add("tick", """
        functions:
          tick:
            handler: tick.py:handle
            triggers: [{schedule: "* * * * * *"}]
    """, """
        def handle(event, ctx):
            record(event, ctx, scheduled=event.time.isoformat())
    """)
    for _ in range(3):
        start_node(project, shared_redis)
    wait_until(lambda: len(project.calls()) >= 5, timeout=30)
    calls = project.calls()
    per_tick: dict[str, int] = {}
    for call in calls:
        per_tick[call["scheduled"]] = per_tick.get(call["scheduled"], 0) + 1
    assert [tick for tick, n in per_tick.items() if n != 1] == []
    assert len({c["id"] for c in calls}) == len(calls)


def test_nodes_ride_out_a_redis_kill9_and_lose_no_acknowledged_event(
    project: Project, own_redis: RedisServer
) -> None:
    project.add("work", *WORK)
    nodes = [start_node(project, own_redis.url) for _ in range(2)]
    project.port = nodes[0][1]
    ids = set(project.publish({"type": "job.run", "data": i} for i in range(3_000)))
    wait_until(lambda: len(project.calls()) >= 300, timeout=60)
    own_redis.kill()
    at_kill = len(project.calls())
    own_redis.start()  # same port, same AOF: every acknowledged write is back
    assert at_kill < len(ids), "the drain finished before Redis was killed"
    wait_until(lambda: ids <= set(project.handled("work")) and drained(nodes[1][1]), timeout=150)
    for proc, _ in nodes:
        assert proc.poll() is None, project.output()
    handled = project.handled("work")
    print(f"\nredis restart: 3000 events, duplicates {sum(n - 1 for n in handled.values())}")
    assert set(handled) == ids
