"""Scenario: the dashboard's first screen with a big history (SPEC 11, issue 19).

A SQLite store (and a Redis one) is filled with `RUNS` run records (100,000; 10,000 under
--quick) through the store API (`Store.record`, finished sync calls: each is a
run record with its event type, error, result and a log line), spread over
three functions and two outcomes. Then `fnrun run` serves it, and a browser's
first screen is timed as the browser asks for it: `GET /_/ui` (the page), then
the first data call of the Runs page, `GET /_/ui/api/runs` (the newest 50 and
the head seq), and of a filtered one (`?function=&status=error`). The static
files are cached by the browser after the first visit and are not counted.
Medians of `SAMPLES` screens per run, on a warm server.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import anyio
import redis

from bench import fnrun_app
from bench.harness import Case, Context, Scenario, Target
from bench.redisdb import NOTHING

RUNS = 100_000
SAMPLES = 30
BATCH = 5000
FUNCTIONS = ("checkout", "receipt", "ship")
DECLARATIONS = """\
functions:
""" + "".join(f"""\
  {name}:
    handler: noop.py:noop
    triggers:
      - event: shop.{name}
""" for name in FUNCTIONS)
HANDLER = """\
def noop(event):
    return None
"""


async def _fill(url: str, total: int) -> None:
    from runtime.events import Event, LogLine, Outcome
    from runtime.plugins import store_for

    store = store_for(url)
    async with store:
        began = time.time() - total * 0.01
        for start in range(0, total, BATCH):
            calls = []
            for n in range(start, min(total, start + BATCH)):
                name = FUNCTIONS[n % len(FUNCTIONS)]
                failed = n % 10 == 0
                outcome = Outcome(
                    "error" if failed else "ok", began + n * 0.01, 0.004,
                    result=None if failed else {"json": {"n": n}},
                    error="RuntimeError: card declined" if failed else None,
                    invocation=f"{n:012x}",
                    logs=(LogLine(began + n * 0.01, "log", "info", f"handled order {n}"),),
                )
                calls.append((name, Event(type=f"shop.{name}", data={"n": n}), outcome))
            await store.record(calls)


def first_screen(ctx: Context, store: str) -> dict[str, float]:
    fnrun_app.require("runtime.dashboard", "the dashboard")
    total = int(ctx.pick(RUNS, 10_000))
    project = fnrun_app.write_project(ctx.scratch("dashboard"), DECLARATIONS,
                                      {"noop.py": HANDLER})
    if store == "sqlite":
        url = fnrun_app.sqlite_url(project)
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    else:
        url = ctx.redis(NOTHING)
        redis.Redis.from_url(url).flushdb()
    anyio.run(_fill, url, total)
    supervisor = fnrun_app.Supervisor(ctx, project, url, name="fnrun-dashboard")
    page, runs, filtered = [], [], []
    try:
        supervisor.wait_ready()
        client = supervisor.http
        listed = client.get("/_/ui/api/runs").json()["runs"]
        if len(listed) != 50:
            raise RuntimeError(f"the first page holds {len(listed)} runs, not 50")
        for _ in range(SAMPLES):
            for path, times in (("/_/ui", page), ("/_/ui/api/runs", runs),
                                ("/_/ui/api/runs?function=ship&status=error", filtered)):
                began = time.perf_counter()
                answer = client.get(path)
                times.append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
    finally:
        supervisor.stop()
    screen = [a + b for a, b in zip(page, runs, strict=True)]
    return {
        "first screen ms": statistics.median(screen),
        "page ms": statistics.median(page),
        "runs ms": statistics.median(runs),
        "filtered runs ms": statistics.median(filtered),
        "runs stored": float(total),
    }


SCENARIO = Scenario(
    name="dashboard",
    title="Dashboard first screen with a big history",
    cases=[Case("fnrun", lambda ctx: first_screen(ctx, "sqlite")),
           Case("fnrun redis", lambda ctx: first_screen(ctx, "redis"))],
    targets={("fnrun", "first screen ms"): Target("< 200 ms", lambda v: v < 200),
             ("fnrun redis", "first screen ms"): Target("< 200 ms", lambda v: v < 200)},
    notes=(
        f"{RUNS:,} run records in SQLite, or in Redis (keeps nothing; 10,000 with --quick); "
        "first screen = GET /_/ui + "
        f"GET /_/ui/api/runs (the Runs page's first data call), median of {SAMPLES}; "
        "filtered = ?function=ship&status=error."
    ),
)
