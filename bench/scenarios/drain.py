"""Scenario 1: drain 10,000 no-op events at concurrency 2, durable.

Each system gets the whole backlog first, then its workers start; the rate
runs from the first delivery seen to an empty queue (depth polled every 20 ms).
"""

from __future__ import annotations

from bench import fnrun_app, queues
from bench.harness import Case, Context, Scenario, Target

DECLARATIONS = """\
functions:
  noop:
    handler: noop.py:noop
    concurrency: 2
    triggers:
      - event: bench.noop
"""
HANDLER = """\
def noop(event):
    return None
"""


def total(ctx: Context) -> int:
    return int(ctx.pick(10_000, 2_000))


def fnrun_drain(ctx: Context, store: str | None = None, nodes: int = 1) -> dict[str, float]:
    """Preload the store, start `nodes` supervisors, time the drain on the first one's API."""
    project = fnrun_app.write_project(ctx.scratch("drain"), DECLARATIONS, {"noop.py": HANDLER})
    url = store or fnrun_app.sqlite_url(project)
    count = total(ctx)
    fnrun_app.preload(url, "bench.noop", ["noop"], count)
    supervisors = [fnrun_app.Supervisor(ctx, project, url, name=f"fnrun-drain-{i}")
                   for i in range(nodes)]
    try:
        first = supervisors[0]
        rate = queues.time_drain(count, lambda: first.outstanding("noop", count), timeout=600,
                                 alive=first.service.alive)
    finally:
        for supervisor in supervisors:
            supervisor.stop()
    return {"events/s": rate}


SCENARIO = Scenario(
    name="drain",
    title="Drain 10,000 no-op events at concurrency 2",
    cases=[
        Case("fnrun (sqlite)", fnrun_drain),
        Case("celery", lambda ctx: queues.celery_drain(ctx, total(ctx))),
        Case("dramatiq 2x1", lambda ctx: queues.dramatiq_drain(ctx, total(ctx))),
        Case("dramatiq 2x8", lambda ctx: queues.dramatiq_drain(ctx, total(ctx), threads=8)),
    ],
    targets={("fnrun (sqlite)", "events/s"): Target(">= 10,000/s", lambda v: v >= 10_000)},
    notes=(
        "Celery 5: Redis broker (the bench database, 12 unless --redis), acks_late=True, "
        "prefork, concurrency 2, "
        "prefetch multiplier 4 (the default); Dramatiq: Redis broker, 2 processes x 1 thread "
        "(as asked) and x 8 threads (its default). The rate runs from the first delivery "
        "seen to an empty queue; each peer's queue is fully loaded before its worker starts. "
        "fnrun's store is a SQLite file with durable commits; its 10,000 events are published "
        "through the store API before `fnrun run` starts."
    ),
)
