"""Memory of a source under a backlog: the supervisor's RSS with 100,000 messages waiting.

Per broker, 100,000 messages are preloaded where the source reads, then
`fnrun run` starts with that source feeding the no-op
function, and the supervisor's own VmRSS (not its workers') is sampled every
20 ms for 20 s of draining: its peak. Against the same supervisor with no
source at all (idle, 3 s). What a source holds is bounded by its `prefetch`
(100), not by the backlog: the brokers scenario shows the peak RSS at backlogs
of 20,000 and 50,000 drained in full.
"""

from __future__ import annotations

import asyncio
import threading
import time

from bench import fnrun_app
from bench.harness import Case, Context, Scenario
from bench.procs import rss_mb
from bench.scenarios.brokers_kit import RIGS, Rig, write_sources
from bench.scenarios.drain import noop_project

BACKLOG, QUICK = 100_000, 5_000
WINDOW_S = 20.0


def fnrun_backlog(kind: str) -> Case:
    def measure(ctx: Context) -> dict[str, float]:
        rig = RIGS[kind](ctx)
        rig.start()
        try:
            asyncio.run(rig.setup())
            try:
                return _sample(ctx, rig, QUICK if ctx.quick else BACKLOG)
            finally:
                asyncio.run(rig.teardown())
        finally:
            rig.stop()

    return Case(f"fnrun {kind} source, backlog 100,000", measure)


def _sample(ctx: Context, rig: Rig, backlog: int) -> dict[str, float]:
    project, _ = noop_project(ctx, f"memory-{rig.kind}")
    write_sources(project, rig)
    live = getattr(rig, "live", False)
    if not live:
        asyncio.run(rig.preload(backlog))
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name=f"fnrun-{rig.kind}-memory")
    publisher = None
    try:
        supervisor.wait_ready()
        if live:
            publisher = threading.Thread(target=lambda: asyncio.run(rig.preload(backlog)),
                                         daemon=True)
            publisher.start()
        peak, until = 0.0, time.monotonic() + WINDOW_S
        while time.monotonic() < until and supervisor.service.alive():
            peak = max(peak, rss_mb(supervisor.pid))
            time.sleep(0.02)
    finally:
        supervisor.stop()
    return {"supervisor RSS MiB": peak}


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
    cases=[Case("fnrun, no source (idle)", idle),
           *(fnrun_backlog(kind) for kind in ("rabbitmq", "kafka", "nats", "redis"))],
    notes=" ".join((__doc__ or "").split()) + " MQTT is left out: with no broker-side "
          "backlog to preload, its figure is the brokers scenario's.",
)
