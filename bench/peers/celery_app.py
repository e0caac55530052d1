"""Celery 5 peer: Redis broker, acks_late, prefork; prefetch multiplier from the env.

Run: celery -A bench.peers.celery_app worker --pool prefork --concurrency 2
"""

import os
import time

from celery import Celery

from bench.peers import stamps

app = Celery("bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12"))
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "4")),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task  # type: ignore[untyped-decorator]  # celery ships no type hints
def noop() -> None:
    """Does nothing but stamp its run: the drain scenario measures the queue, not the work."""
    stamps.record(time.time())


@app.task  # type: ignore[untyped-decorator]  # celery ships no type hints
def record(sent: float) -> None:
    """Append '<sent> <start>' so the latency scenario can read handler start times."""
    started = time.time()
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(f"{sent} {started}\n")
