"""Scenario 7: fnrun on Redis Streams with 1, 2 and 3 nodes, and Celery on the same Redis.

fnrun's nodes are up and warm first; then the benchmark publishes the 10,000
events through the store API (1,000 per call) and the rate runs from the first
publish to the last handler end (the handlers' own stamps), ingress included.
Celery is measured as in the drain scenario (queue loaded first, then timed),
its kinder case: its per-message apply_async would otherwise compete with its
workers for the cores. Redis commands per delivery are the server's INFO
commandstats delta from before the publish to an empty queue, divided by the
events; they include publishing and the nodes' idle polling. The server is
private to the run and keeps nothing; `redis_durable` runs the same cases on
an append-only file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import fnrun_app, queues, redisdb
from bench.harness import Case, Context, Scenario, Target
from bench.peers import stamps
from bench.procs import wait_until
from bench.redisdb import LABELS, NOTHING
from bench.scenarios.drain import noop_project, total

WARM = 20
"""Events drained before the measurement, so every worker is warm."""


def _live_drain(ctx: Context, url: str, folder: Path,
                outstanding: Callable[[], int]) -> dict[str, float]:
    fnrun_app.preload(url, "bench.noop", ["noop"], WARM)
    queues.wait_for_runs(folder, WARM, 60)
    for slot in folder.iterdir():  # the warm-up's runs are not part of the measurement
        with slot.open("r+b") as file:  # in place: the workers keep it mapped
            file.write(bytes(stamps.SLOT.size))
    count = total(ctx)
    conn = redisdb.client(url)
    before = redisdb.commands_processed(conn)
    began = fnrun_app.preload(url, "bench.noop", ["noop"], count)
    runs, _, last = queues.wait_for_runs(folder, count, 600)
    wait_until(lambda: outstanding() == 0, 60, "the last outcomes", every=queues.POLL)
    used = redisdb.commands_processed(conn) - before - 1
    return {"events/s": runs / (last - began), "redis cmds/delivery": used / count}


def fnrun_nodes(nodes: int, mode: str = NOTHING) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        url = ctx.redis(mode)
        redisdb.flush(url)
        project, folder = noop_project(ctx, "redis")
        supervisors = []
        try:
            for index in range(nodes):
                supervisors.append(fnrun_app.Supervisor(ctx, project, url,
                                                        name=f"fnrun-redis-{index}"))
            for supervisor in supervisors:
                supervisor.wait_ready()
            first = supervisors[0]
            return _live_drain(ctx, url, folder, lambda: first.outstanding("noop", -1))
        finally:
            for supervisor in supervisors:
                supervisor.stop()
            redisdb.flush(url)

    plural = "s" if nodes > 1 else ""
    return Case(f"fnrun redis {nodes} node{plural} ({LABELS[mode]})", measure, group=mode)


def celery(mode: str = NOTHING) -> Case:
    return Case(f"celery ({LABELS[mode]})",
                lambda ctx: queues.celery_drain(ctx, total(ctx), mode), group=mode)


SCENARIO = Scenario(
    name="redis_scale",
    title="fnrun on Redis Streams: 1, 2, 3 nodes vs Celery on the same Redis (keeps nothing)",
    cases=[fnrun_nodes(1), fnrun_nodes(2), fnrun_nodes(3), celery()],
    targets={(f"fnrun redis 1 node ({LABELS[NOTHING]})", "events/s"):
             Target(">= 8,000/s", lambda v: v >= 8_000)},
    notes=(
        "A redis-server private to the run that keeps nothing (`--save \"\" --appendonly "
        "no`), database 12, flushed before and after each run. Each node is one `fnrun "
        "run --store redis://127.0.0.1:PORT/12` with the no-op at concurrency 2; all "
        "nodes share the machine's 2 cores, so more nodes measure coordination cost, not "
        "added capacity. Rate = handler runs / (last handler end - first publish). Redis "
        "commands per delivery: INFO commandstats delta from before the publish to an "
        "empty queue (node 1's GET /_/functions, whose own Redis commands count too). "
        "Commands are not round trips: pipelines and Lua scripts carry several per trip."
    ),
)
