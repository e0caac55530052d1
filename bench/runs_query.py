"""How fast the stores answer run record queries on a big history (SPEC 11).

    python -m bench.runs_query [--runs 100000] [--redis redis://127.0.0.1:6379/12]

Fills a SQLite store (a temporary folder) with `--runs` records, and a Redis
database with as many as it keeps (`RUNS_MAX`), each with three log lines and
a small result; 1 run in 20 failed, 1 event type in 50 is rare. Then times
each query the dashboard, `fnrun logs` and `fnrun trace` make: the median and
the worst of 20 calls, in milliseconds, through the store API (what the HTTP
routes add is the dashboard's to measure). Nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from runtime.events import Event, LogLine, Outcome
from runtime.store.base import Call, Store

CALLS = 20
FUNCTIONS = ("checkout", "mail", "stock", "audit")


def history(count: int) -> list[list[Call]]:
    """`count` finished sync calls in batches of 1,000, oldest first."""
    batches, now = [], time.time() - count * 0.01
    for start in range(0, count, 1000):
        batch: list[Call] = []
        for i in range(start, min(count, start + 1000)):
            kind = "rare.thing" if i % 50 == 7 else f"order.{('created', 'paid')[i % 2]}"
            at = now + i * 0.01
            logs = tuple(LogLine(at, "log", "info", f"step {n} of run {i}") for n in range(3))
            failed = i % 20 == 3
            outcome = Outcome("error" if failed else "ok", at, 0.004, result={"json": {"n": i}},
                              error="ValueError: bad" if failed else None,
                              traceback="Traceback ...\nValueError: bad" if failed else None,
                              invocation=f"{i:08x}{i % 65536:04x}", logs=logs)
            batch.append((FUNCTIONS[i % 4], Event(type=kind, data={"n": i}), outcome))
        batches.append(batch)
    return batches


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    times = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


async def measure(name: str, store: Store, count: int) -> None:
    batches = history(count)
    t0 = time.perf_counter()
    for batch in batches:
        await store.record(batch)
    filled = time.perf_counter() - t0
    newest = await store.runs(limit=1)
    kept = len(await store.runs(limit=1_000_000)) if name == "redis" else count
    mid = newest[0].seq - kept // 2
    some = [c[1].id for c in batches[-1][:10]]
    recent, oldest = batches[-1][500][2].invocation, batches[0][0][2].invocation
    queries: dict[str, Callable[[], Awaitable[Any]]] = {
        "runs(limit=50)": lambda: store.runs(limit=50),
        "runs(limit=50, before_seq=middle)": lambda: store.runs(limit=50, before_seq=mid),
        "runs(function=mail)": lambda: store.runs(function="mail"),
        "runs(status=error)": lambda: store.runs(status="error"),
        "runs(function=mail, status=error)": lambda: store.runs(function="mail", status="error"),
        "runs(event_type=order.*)": lambda: store.runs(event_type="order.*"),
        "runs(event_type=rare.*) (1 in 50)": lambda: store.runs(event_type="rare.*"),
        "runs(event_type=none.*) (no match)": lambda: store.runs(event_type="none.*"),
        "runs(after_seq=newest-100)": lambda: store.runs(after_seq=newest[0].seq - 100),
        "run(invocation) of a recent run": lambda: store.run(recent),
        "run(invocation) of the oldest run": lambda: store.run(oldest),
        "runs_for_events(10 ids)": lambda: store.runs_for_events(some),
        "history(limit=50)": lambda: store.history(limit=50),
    }
    print(f"\n{name}: {kept:,} runs kept ({count:,} written in {filled:.1f} s)")
    print("| query | median ms | worst ms |\n| --- | ---: | ---: |")
    for label, call in queries.items():
        median, worst = await timed(call)
        print(f"| {label} | {median:.2f} | {worst:.2f} |")


async def main(args: argparse.Namespace) -> None:
    from runtime.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as folder:
        async with SqliteStore(f"sqlite:///{Path(folder) / 'state.db'}") as sqlite:
            await measure("sqlite", sqlite, args.runs)
    if args.redis:
        import redis

        from runtime.store.redis import RUNS_MAX, RedisStore

        with redis.Redis.from_url(args.redis) as client:
            client.flushdb()
        async with RedisStore(args.redis) as store:
            await measure("redis", store, min(args.runs, RUNS_MAX))
        with redis.Redis.from_url(args.redis) as client:
            client.flushdb()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--redis", help="a Redis database to fill and flush (not 0)")
    anyio.run(main, parser.parse_args())
