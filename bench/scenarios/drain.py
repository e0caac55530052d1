"""Scenario 1: drain 10,000 no-op events at concurrency 2, durable.

Each system gets the whole backlog first, then its workers start. The rate is
the handler runs divided by the span from the first handler start to the last
handler end, both stamped by the handlers themselves (`peers/stamps.py`).
"""

from __future__ import annotations

from pathlib import Path

from bench import fnrun_app, queues
from bench.harness import Case, Context, Scenario, Target
from bench.peers import stamps
from bench.procs import wait_until
from bench.redisdb import NOTHING

DECLARATIONS = """\
functions:
  noop:
    handler: noop.py:noop
    concurrency: 2
    env: {{BENCH_STAMPS: "{stamps}"}}
    triggers:
      - event: bench.noop
"""
HANDLER = Path(stamps.__file__).read_text() + '''

def noop(event):
    record(time.time())
    return None
'''


def total(ctx: Context) -> int:
    return min(ctx.drain_events, 2_000) if ctx.quick else ctx.drain_events


def noop_project(ctx: Context, name: str) -> tuple[Path, Path]:
    """A project with the stamping no-op at concurrency 2: (project, stamp folder)."""
    folder = queues.stamp_folder(ctx)
    project = fnrun_app.write_project(ctx.scratch(name), DECLARATIONS.format(stamps=folder),
                                      {"noop.py": HANDLER})
    return project, folder


def fnrun_drain(ctx: Context, tree: Path | None = None) -> dict[str, float]:
    """Preload a SQLite store, start `fnrun run`, time the drain from the handlers' stamps."""
    project, folder = noop_project(ctx, "drain")
    url = fnrun_app.sqlite_url(project)
    count = total(ctx)
    fnrun_app.preload(url, "bench.noop", ["noop"], count, tree)
    supervisor = fnrun_app.Supervisor(ctx, project, url, name="fnrun-drain", tree=tree)
    try:
        runs, first, last = queues.wait_for_runs(folder, count, 600, supervisor.service.alive)
        # Outcomes written before the supervisor stops: the store's state is the whole job.
        wait_until(lambda: supervisor.outstanding("noop", count) == 0, 60,
                   "the last outcomes", every=queues.POLL)
    finally:
        supervisor.stop()
    return {"events/s": runs / (last - first)}


KEEPS = " (Redis keeps nothing)"

SCENARIO = Scenario(
    name="drain",
    title="Drain 10,000 no-op events at concurrency 2",
    cases=[
        Case("fnrun (sqlite)", fnrun_drain),
        Case("celery" + KEEPS, lambda ctx: queues.celery_drain(ctx, total(ctx), NOTHING)),
        Case("dramatiq 2x1" + KEEPS,
             lambda ctx: queues.dramatiq_drain(ctx, total(ctx), NOTHING)),
        Case("dramatiq 2x8" + KEEPS,
             lambda ctx: queues.dramatiq_drain(ctx, total(ctx), NOTHING, threads=8)),
    ],
    targets={("fnrun (sqlite)", "events/s"): Target(">= 10,000/s", lambda v: v >= 10_000)},
    notes=(
        "Rate = handler runs / (last handler end - first handler start), stamped by each "
        "system's no-op itself in a memory-mapped slot per process and thread (no system "
        "call per run); the queue is polled only to know when to read the stamps. Each "
        "system's backlog is fully loaded before its workers start. fnrun: a SQLite store "
        "with durable commits, the events published through the store API before `fnrun "
        "run` starts. Celery 5: Redis broker, acks_late=True, prefork, concurrency 2, "
        "prefetch multiplier 4 (the default); Dramatiq: Redis broker, 2 processes x 1 "
        "thread (as asked) and x 8 threads (its default). Their Redis is private to the "
        "run and keeps nothing (`--save \"\" --appendonly no`): see redis_durable for "
        "the same on an AOF. --drain-events sets the backlog."
    ),
)
