"""Memory of a source under a backlog: the supervisor's peak RSS while it drains 100,000.

Per broker, 100,000 messages wait for the source (MQTT: published while it
runs, into a Mosquitto with unbounded session queues) and `fnrun run` drains
them into the no-op function; the supervisor's own VmRSS (not its workers') is
sampled at each poll, every 20 ms. Against the same supervisor with a backlog
of 10,000, and with no source at all (idle, 3 s): what a source holds is
bounded by its `prefetch` (100), not by the backlog, so the 100,000 and 10,000
rows should match.
"""

from __future__ import annotations

import asyncio
import time

from bench import fnrun_app
from bench.harness import Case, Context, Scenario
from bench.procs import rss_mb
from bench.scenarios.brokers import _fnrun_drain
from bench.scenarios.brokers_kit import RIGS
from bench.scenarios.drain import noop_project

QUICK = 5_000


def fnrun_backlog(kind: str, backlog: int) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            asyncio.run(rig.setup())
            try:
                count = min(backlog, QUICK) if ctx.quick else backlog
                found = _fnrun_drain(ctx, rig, count)
                return {"supervisor RSS MiB": found["supervisor RSS MiB"]}
            finally:
                asyncio.run(rig.teardown())
        finally:
            rig.stop()

    return Case(f"fnrun {kind} source, backlog {backlog:,}", measure)


def idle(ctx: Context) -> dict[str, float]:
    project, _ = noop_project(ctx, "idle")
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name="fnrun-idle")
    try:
        supervisor.wait_ready()
        peak, until = 0.0, time.monotonic() + 3
        while time.monotonic() < until:
            peak = max(peak, rss_mb(supervisor.pid))
            time.sleep(0.02)
    finally:
        supervisor.stop()
    return {"supervisor RSS MiB": peak}


SCENARIO = Scenario(
    name="brokers_memory",
    title="Supervisor RSS per source under a 100,000-message backlog",
    cases=[
        Case("fnrun, no source (idle)", idle),
        *(fnrun_backlog(kind, backlog) for kind in RIGS for backlog in (100_000, 10_000)),
    ],
    notes=" ".join((__doc__ or "").split()),
)
