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


def fnrun_latency(ctx: Context) -> dict[str, float]:
    root = ctx.scratch("latency")
    out = root / "records.txt"
    project = fnrun_app.write_project(root, DECLARATIONS.format(out=out), {"record.py": HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name="fnrun-latency")
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

            return _measure(ctx, send, out, threads=16)
    finally:
        supervisor.stop()


def celery_latency(ctx: Context) -> dict[str, float]:
    from bench.peers.celery_app import app, record

    out = ctx.scratch("latency") / "records.txt"
    redisdb.flush(ctx.redis_url)
    app.conf.broker_url = ctx.redis_url
    worker = queues.start_celery(ctx, {"BENCH_OUT": str(out)})
    try:
        return _measure(ctx, lambda sent: record.apply_async(args=(sent,)), out, threads=0)
    finally:
        worker.stop()
        redisdb.flush(ctx.redis_url)


def _measure(ctx: Context, send: pacing.Sender, out: Path, threads: int) -> dict[str, float]:
    pacing.warm_up(send, out, threads)
    pacing.send_steadily(send, RATE, count(ctx), threads)
    return pacing.latency_ms(out, count(ctx))


SCENARIO = Scenario(
    name="latency",
    title="emit -> handler start at a steady 200 events/s",
    cases=[Case("fnrun (sqlite)", fnrun_latency), Case("celery", celery_latency)],
    targets={("fnrun (sqlite)", "p99 ms"): Target("<= celery's p99 (stretch 1 ms)",
                                                  lambda v: v <= 1.0)},
    notes=(
        "Open-loop: sends are scheduled at 200/s whatever the answers take. Sent = just before "
        "POST /_/events (fnrun, answered 202 after the durable commit) or apply_async (Celery); "
        "start = the handler's first line. 20 warm-up events are discarded. The target column "
        "checks the 1 ms stretch; the ratio column answers 'no worse than Celery'."
    ),
)
