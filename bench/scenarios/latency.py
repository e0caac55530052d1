"""Scenario 2: emit -> handler-start latency at a steady 200 events/s for ~10 s.

fnrun: POST /_/events (a one-event CloudEvents batch) to a running supervisor;
Celery: apply_async. Each handler appends "<sent> <start>" to its own file.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from bench import fnrun_app, pacing, queues, redisdb
from bench.harness import Case, Context, Scenario, Target
from bench.redisdb import LABELS, NOTHING

RATE = 200.0
DECLARATIONS = """\
functions:
  record:
    handler: record.py:record
    concurrency: 2
    env: {{BENCH_OUT: "{out}"}}
    triggers:
      - event: bench.latency
"""
HANDLER = """\
import os
import time


def record(event):
    started = time.time()
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(f"{event.data['sent']} {started}\\n")
"""
BATCH = "application/cloudevents-batch+json"


def count(ctx: Context) -> int:
    return int(RATE * ctx.pick(10, 3))


def fnrun_latency(ctx: Context, tree: Path | None = None,
                  seconds: float | None = None) -> dict[str, float]:
    """POST /_/events to `fnrun run` (of `tree`, this checkout by default) for `seconds`."""
    root = ctx.scratch("latency")
    out = root / "records.txt"
    project = fnrun_app.write_project(root, DECLARATIONS.format(out=out), {"record.py": HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name="fnrun-latency", tree=tree)
    try:
        supervisor.wait_ready()
        with httpx.Client(base_url=supervisor.base, timeout=10,
                          limits=httpx.Limits(max_connections=16)) as client:
            def send(sent: float) -> None:
                body = [{"specversion": "1.0", "id": str(uuid.uuid4()), "type": "bench.latency",
                         "source": "bench", "data": {"sent": sent}}]
                answer = client.post("/_/events", content=json.dumps(body),
                                     headers={"content-type": BATCH})
                if answer.status_code != 202:
                    raise RuntimeError(f"POST /_/events: {answer.status_code} {answer.text[:200]}")

            total = count(ctx) if seconds is None else int(RATE * seconds)
            return _measure(send, out, threads=16, total=total)
    finally:
        supervisor.stop()


def celery_latency(ctx: Context) -> dict[str, float]:
    from bench.peers.celery_app import app, record

    out = ctx.scratch("latency") / "records.txt"
    url = ctx.redis(NOTHING)
    redisdb.flush(url)
    worker = queues.start_celery(ctx, url, {"BENCH_OUT": str(out)})
    try:
        with app.connection_for_write(url) as conn, conn.Producer() as producer:
            return _measure(lambda sent: record.apply_async(args=(sent,), producer=producer),
                            out, threads=0, total=count(ctx))
    finally:
        worker.stop()
        redisdb.flush(url)


def _measure(send: pacing.Sender, out: Path, threads: int, total: int) -> dict[str, float]:
    pacing.warm_up(send, out, threads)
    pacing.send_steadily(send, RATE, total, threads)
    return pacing.latency_ms(out, total)


SCENARIO = Scenario(
    name="latency",
    title="emit -> handler start at a steady 200 events/s",
    cases=[Case("fnrun (sqlite)", fnrun_latency),
           Case(f"celery ({LABELS[NOTHING]})", celery_latency)],
    targets={("fnrun (sqlite)", "p99 ms"): Target("<= celery's p99 (stretch 1 ms)",
                                                  lambda v: v <= 1.0)},
    notes=(
        "Open-loop: sends are scheduled at 200/s whatever the answers take. Sent = just before "
        "POST /_/events (fnrun, answered 202 after the durable commit) or apply_async (Celery); "
        "start = the handler's first line. 20 warm-up events are discarded. p99 from 2,000 "
        "samples; --quick's 600 show the maximum instead. Celery's Redis is private to the "
        "run and keeps nothing. The target column checks the 1 ms stretch; the ratio "
        "column answers 'no worse than Celery'."
    ),
)
