"""Dramatiq peer: Redis broker; run as `dramatiq bench.peers.dramatiq_app -p 2 -t 1`."""

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import stamps

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/12")
)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    """Does nothing but stamp its run: the drain scenario measures the queue, not the work."""
    stamps.record(time.time())


@dramatiq.actor(max_retries=0)
def record(sent: float) -> None:
    """Append '<sent> <start>' so the latency scenario can read handler start times."""
    started = time.time()
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(f"{sent} {started}\n")
