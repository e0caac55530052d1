"""Celery and Dramatiq on Redis: load a queue, start workers, watch the queue drain."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from bench import redisdb
from bench.harness import Context
from bench.procs import Service, wait_until

BIN = Path(sys.executable).parent
POLL = 0.02
"""Seconds between queue-depth polls; the same for every system measured."""


def start_celery(ctx: Context, env: dict[str, str] | None = None) -> Service:
    """Celery 5 worker: prefork, concurrency 2, acks_late (see peers/celery_app.py)."""
    argv = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "--pool", "prefork",
            "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    return Service(argv, ctx.logs / "celery.log", {"BENCH_BROKER": ctx.redis_url, **(env or {})})


def start_dramatiq(ctx: Context, threads: int = 1) -> Service:
    """Dramatiq worker: 2 processes x `threads` threads."""
    argv = [str(BIN / "dramatiq"), "bench.peers.dramatiq_app", "--processes", "2",
            "--threads", str(threads)]
    return Service(argv, ctx.logs / "dramatiq.log", {"BENCH_BROKER": ctx.redis_url})


def celery_outstanding(conn: redis.Redis) -> int:
    """Messages queued or reserved-but-not-acked (acks_late keeps them in `unacked`)."""
    pipe = conn.pipeline()
    pipe.llen("celery")
    pipe.hlen("unacked")
    queued, unacked = pipe.execute()
    return int(queued) + int(unacked)


def dramatiq_outstanding(conn: redis.Redis) -> int:
    """Messages not yet acked: Dramatiq deletes a message from `<queue>.msgs` on ack."""
    return int(conn.hlen("dramatiq:default.msgs"))


def time_drain(total: int, outstanding: Callable[[], int], timeout: float,
               alive: Callable[[], bool] = lambda: True) -> float:
    """Events/s from the first delivery seen to an empty queue, polled every POLL s."""
    def started() -> bool:
        if not alive():
            raise RuntimeError("the worker exited before the queue drained")
        return outstanding() < total

    wait_until(started, timeout, "the first delivery", every=POLL)
    began = time.monotonic()
    wait_until(lambda: started() and outstanding() == 0, timeout, "the queue to drain", every=POLL)
    return total / (time.monotonic() - began)


def celery_drain(ctx: Context, total: int) -> dict[str, float]:
    """Load `total` no-op tasks, then start Celery and time the drain."""
    from bench.peers.celery_app import app, noop

    redisdb.flush(ctx.redis_url)
    app.conf.broker_url = ctx.redis_url
    with app.producer_or_acquire() as producer:
        for _ in range(total):
            noop.apply_async(producer=producer)
    return _drain(ctx, total, start_celery, celery_outstanding)


def dramatiq_drain(ctx: Context, total: int, threads: int = 1) -> dict[str, float]:
    """Load `total` no-op messages, then start Dramatiq and time the drain."""
    from bench.peers import dramatiq_app

    redisdb.flush(ctx.redis_url)
    for _ in range(total):
        dramatiq_app.noop.send()
    return _drain(ctx, total, lambda c: start_dramatiq(c, threads), dramatiq_outstanding)


def _drain(ctx: Context, total: int, start: Callable[[Context], Service],
           outstanding: Callable[[redis.Redis], int]) -> dict[str, float]:
    conn = redisdb.client(ctx.redis_url)
    before = redisdb.commands_processed(conn)
    worker = start(ctx)
    polls = 0

    def depth() -> int:
        nonlocal polls
        polls += 1
        return outstanding(conn)

    try:
        rate = time_drain(total, depth, timeout=300, alive=worker.alive)
    finally:
        worker.stop()
    # Our own polling (2 commands for Celery, 1 for Dramatiq) and INFO calls are not the peer's.
    mine = polls * (2 if outstanding is celery_outstanding else 1) + 2
    used = redisdb.commands_processed(conn) - before - mine
    redisdb.flush(ctx.redis_url)
    return {"events/s": rate, "redis cmds/delivery": used / total}
