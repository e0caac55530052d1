"""Flow control (SPEC 12): drain 10,000 no-op events over 100 keys with `order: key`
at concurrency 2 and 8, beside the unordered drain of the same handler, and a
`batch: {max_size: 100}` drain of a no-op batch handler.

Same method as the drain scenario: a SQLite store preloaded with the backlog
(each event's `partitionkey` one of 100 keys) before `fnrun run` starts; the rate
is the handler runs (one per event, also in a batch) divided by the span from the
first handler start to the last end, stamped by the handlers (`peers/stamps.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import fnrun_app, queues, redisdb
from bench.harness import Case, Context, Scenario
from bench.peers import stamps
from bench.procs import wait_until
from bench.redisdb import NOTHING
from bench.scenarios.drain import total

KEYS = 100
DECLARATION = """\
functions:
  noop:
    handler: noop.py:{handler}
    concurrency: {concurrency}
    env: {{BENCH_STAMPS: "{stamps}"}}
    triggers:
      - event: bench.noop
{rules}"""
HANDLER = Path(stamps.__file__).read_text() + '''

def noop(event):
    record(time.time())
    return None


def noop_batch(events):
    started = time.time()
    for _ in events:
        record(started)
    return None
'''


def flow_drain(
    handler: str, concurrency: int, rules: str, *, redis: bool = False
) -> Callable[[Context], dict[str, float]]:
    def case(ctx: Context) -> dict[str, float]:
        folder = queues.stamp_folder(ctx)
        text = DECLARATION.format(handler=handler, concurrency=concurrency, stamps=folder,
                                  rules=rules)
        project = fnrun_app.write_project(ctx.scratch("flow"), text, {"noop.py": HANDLER})
        url = ctx.redis(NOTHING) if redis else fnrun_app.sqlite_url(project)
        if redis:
            redisdb.flush(url)
        count = total(ctx)
        fnrun_app.preload(url, "bench.noop", ["noop"], count, keys=KEYS)
        supervisor = fnrun_app.Supervisor(ctx, project, url, name="fnrun-flow")
        try:
            runs, first, last = queues.wait_for_runs(folder, count, 600,
                                                     supervisor.service.alive)
            wait_until(lambda: supervisor.outstanding("noop", count) == 0, 60,
                       "the last outcomes", every=queues.POLL)
        finally:
            supervisor.stop()
            if redis:
                redisdb.flush(url)
        return {"events/s": runs / (last - first)}
    return case


ORDERED = "    order: key\n"
SCENARIO = Scenario(
    name="flow",
    title="Flow control: order: key over 100 keys, and batches, draining 10,000 no-ops",
    cases=[
        Case("unordered, concurrency 2", flow_drain("noop", 2, "")),
        Case("order: key, concurrency 2", flow_drain("noop", 2, ORDERED)),
        Case("unordered, concurrency 8", flow_drain("noop", 8, "")),
        Case("order: key, concurrency 8", flow_drain("noop", 8, ORDERED)),
        Case("batch 100, concurrency 2",
             flow_drain("noop_batch", 2, "    batch: {max_size: 100, max_wait: 200ms}\n")),
        Case("redis: unordered, concurrency 8", flow_drain("noop", 8, "", redis=True)),
        Case("redis: order: key, concurrency 8", flow_drain("noop", 8, ORDERED, redis=True)),
    ],
    notes=(
        "SQLite store, durable commits (the redis: cases on the run's Redis that keeps "
        "nothing), the backlog published through the store API "
        "before `fnrun run` starts, each event's partitionkey one of 100 keys. order: key "
        "runs one event per key at a time in publish order (SPEC 12); batch hands the "
        "handler up to 100 events per call. --drain-events sets the backlog."
    ),
)
