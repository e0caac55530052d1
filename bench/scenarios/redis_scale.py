"""Scenario 7: fnrun on Redis Streams with 1, 2 and 3 nodes, and Celery on the same Redis.

fnrun's nodes are up and warm first; then the benchmark publishes the 10,000
events through the store API (1,000 per call) and the rate runs from the first
publish to an empty queue, ingress included. Celery is measured as in the
drain scenario (queue loaded first, then timed), its kinder case: its
per-message apply_async would otherwise compete with its workers for the cores. Redis commands per
delivery are the server's INFO commandstats delta over that span, divided by
the events; they include publishing and the nodes' idle polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import fnrun_app, queues, redisdb
from bench.harness import Case, Context, Scenario, Target
from bench.procs import wait_until
from bench.scenarios.drain import DECLARATIONS, HANDLER, total

WARM = 20
"""Events drained before the measurement, so every worker is warm."""


def _live_drain(ctx: Context, publish: Callable[[int], None],
                outstanding: Callable[[], int]) -> dict[str, float]:
    publish(WARM)
    wait_until(lambda: outstanding() == 0, 60, "the warm-up events to drain", every=0.02)
    count = total(ctx)
    conn = redisdb.client(ctx.redis_url)
    before = redisdb.commands_processed(conn)
    began = time.monotonic()
    publish(count)
    wait_until(lambda: outstanding() == 0, 600, "the queue to drain", every=queues.POLL)
    elapsed = time.monotonic() - began
    used = redisdb.commands_processed(conn) - before - 1
    return {"events/s": count / elapsed, "redis cmds/delivery": used / count}


def fnrun_nodes(nodes: int) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        redisdb.flush(ctx.redis_url)
        project = fnrun_app.write_project(ctx.scratch("redis"), DECLARATIONS,
                                          {"noop.py": HANDLER})
        supervisors = []
        try:
            for index in range(nodes):
                supervisors.append(fnrun_app.Supervisor(ctx, project, ctx.redis_url,
                                                        name=f"fnrun-redis-{index}"))
            for supervisor in supervisors:
                supervisor.wait_ready()
            first = supervisors[0]
            return _live_drain(
                ctx,
                lambda n: fnrun_app.preload(ctx.redis_url, "bench.noop", ["noop"], n),
                lambda: first.outstanding("noop", -1),
            )
        finally:
            for supervisor in supervisors:
                supervisor.stop()
            redisdb.flush(ctx.redis_url)

    return Case(f"fnrun redis {nodes} node{'s' if nodes > 1 else ''}", measure)


SCENARIO = Scenario(
    name="redis_scale",
    title="fnrun on Redis Streams: 1, 2, 3 nodes vs Celery on the same Redis",
    cases=[
        fnrun_nodes(1), fnrun_nodes(2), fnrun_nodes(3),
        Case("celery", lambda ctx: queues.celery_drain(ctx, total(ctx))),
    ],
    targets={("fnrun redis 1 node", "events/s"): Target(">= 8,000/s", lambda v: v >= 8_000)},
    notes=(
        "The bench Redis database (DB 12 unless --redis), flushed before and after each run. "
        "Each node is one `fnrun run --store redis://127.0.0.1:6379/12` with the no-op at "
        "concurrency 2; all "
        "nodes share the machine's 2 cores, so more nodes measure coordination cost, not "
        "added capacity. Drain is polled on node 1's GET /_/functions every 20 ms (this "
        "polling's own Redis commands are counted too). Commands are not round trips: "
        "pipelines and Lua scripts carry several per trip. INFO commandstats is server-wide: "
        "other clients of the same server (other databases) inflate a run, so the minimum "
        "is the cleaner figure."
    ),
)
