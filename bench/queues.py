"""Drains timed by the handlers' own stamps; Celery and Dramatiq workers on Redis.

Every system's no-op handler records its start and end (`peers/stamps.py`);
a drain's rate is the handler runs divided by the span from the first start
(or the first publish, where ingress is timed) to the last end. The queue is
polled only to know when to read the stamps, so the poll's interval no longer
enters the figure. After the last run the benchmark also waits for the queue
to be empty (acks and outcome writes done) before reading Redis's counters.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import redis

from bench import redisdb
from bench.harness import Context
from bench.peers import stamps
from bench.procs import Service, wait_until

BIN = Path(sys.executable).parent
POLL = 0.02
"""Seconds between checks for the last handler run; it does not enter the rate."""


def stamp_folder(ctx: Context) -> Path:
    """A folder for one drain's stamps, writable by the workers' user whoever it is."""
    return ctx.scratch("stamps")


def wait_for_runs(folder: Path, total: int, timeout: float,
                  alive: Callable[[], bool] = lambda: True) -> tuple[int, float, float]:
    """Wait until `total` handler runs are stamped in `folder`; (runs, first, last)."""
    def done() -> bool:
        if not alive():
            raise RuntimeError("the worker exited before every event ran")
        return stamps.summary(str(folder))[0] >= total

    wait_until(done, timeout, f"{total} handler runs", every=POLL)
    runs, first, last = stamps.summary(str(folder))
    if runs > total:
        raise RuntimeError(f"{runs} handler runs for {total} events: some ran twice")
    return runs, first, last


def start_celery(ctx: Context, url: str, env: dict[str, str] | None = None) -> Service:
    """Celery 5 worker: prefork, concurrency 2, acks_late (see peers/celery_app.py)."""
    argv = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "--pool", "prefork",
            "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
    return Service(argv, ctx.logs / "celery.log", {"BENCH_BROKER": url, **(env or {})})


def start_dramatiq(ctx: Context, url: str, threads: int, env: dict[str, str]) -> Service:
    """Dramatiq worker: 2 processes x `threads` threads."""
    argv = [str(BIN / "dramatiq"), "bench.peers.dramatiq_app", "--processes", "2",
            "--threads", str(threads)]
    return Service(argv, ctx.logs / "dramatiq.log", {"BENCH_BROKER": url, **env})


def celery_outstanding(conn: redis.Redis) -> int:
    """Messages queued or reserved-but-not-acked (acks_late keeps them in `unacked`)."""
    pipe = conn.pipeline(transaction=False)  # no MULTI/EXEC: two commands, counted below
    pipe.llen("celery")
    pipe.hlen("unacked")
    queued, unacked = pipe.execute()
    return int(queued) + int(unacked)


def dramatiq_outstanding(conn: redis.Redis) -> int:
    """Messages not yet acked: Dramatiq deletes a message from `<queue>.msgs` on ack."""
    return int(conn.hlen("dramatiq:default.msgs"))


def celery_drain(ctx: Context, total: int, mode: str) -> dict[str, float]:
    """Load `total` no-op tasks, then start Celery and time the drain."""
    from bench.peers.celery_app import app, noop

    url = ctx.redis(mode)
    redisdb.flush(url)
    with app.connection_for_write(url) as conn, conn.Producer() as producer:
        for _ in range(total):
            noop.apply_async(producer=producer)
    folder = stamp_folder(ctx)
    return _drain(total, url, celery_outstanding,
                  lambda: start_celery(ctx, url, {"BENCH_STAMPS": str(folder)}), folder)


def dramatiq_drain(ctx: Context, total: int, mode: str, threads: int = 1) -> dict[str, float]:
    """Load `total` no-op messages, then start Dramatiq and time the drain."""
    from dramatiq.brokers.redis import RedisBroker

    from bench.peers.dramatiq_app import noop

    url = ctx.redis(mode)
    redisdb.flush(url)
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    try:
        for _ in range(total):
            broker.enqueue(noop.message())
    finally:
        broker.close()  # type: ignore[no-untyped-call]
    folder = stamp_folder(ctx)
    env = {"BENCH_STAMPS": str(folder)}
    return _drain(total, url, dramatiq_outstanding,
                  lambda: start_dramatiq(ctx, url, threads, env), folder)


def _drain(total: int, url: str, outstanding: Callable[[redis.Redis], int],
           start: Callable[[], Service], folder: Path) -> dict[str, float]:
    conn = redisdb.client(url)
    before = redisdb.commands_processed(conn)
    worker = start()
    polls = 0

    def empty() -> bool:
        nonlocal polls
        polls += 1
        return outstanding(conn) == 0

    try:
        runs, first, last = wait_for_runs(folder, total, 300, worker.alive)
        wait_until(empty, 60, "the last acks", every=POLL)
    finally:
        worker.stop()
    # Our own polling (2 commands for Celery, 1 for Dramatiq) and INFO calls are not the peer's.
    mine = polls * (2 if outstanding is celery_outstanding else 1) + 2
    used = redisdb.commands_processed(conn) - before - mine
    redisdb.flush(url)
    return {"events/s": runs / (last - first), "redis cmds/delivery": used / total}
