"""Scenario 5: schedule tick latency, and the idle CPU of 1,000 schedules.

Tick latency: a per-second cron (croniter's seconds field); the handler appends
"<scheduled tick> <start>", so each record is scheduled time -> handler start.
Idle CPU: 1,000 functions on yearly schedules (none fires during the window);
utime + stime of the supervisor and its children from /proc, as % of one core.
"""

from __future__ import annotations

import time

from bench import fnrun_app, pacing
from bench.harness import Case, Context, Scenario, Target
from bench.procs import cpu_seconds, descendants, high_ms, percentile

TICKS = """\
functions:
  tick:
    handler: tick.py:tick
    env: {{BENCH_OUT: "{out}"}}
    triggers:
      - schedule: {{cron: "* * * * * *", catch_up: none}}
"""
TICK_HANDLER = """\
import os
import time


def tick(event):
    started = time.time()
    with open(os.environ["BENCH_OUT"], "a") as out:
        out.write(f"{event.time.timestamp()} {started}\\n")
"""
IDLE_HANDLER = """\
def noop(event):
    return None
"""
SCHEDULES = 1000
SETTLE = 3.0
"""Seconds after /_/health answers before the CPU window opens (start-up work done)."""


def tick_latency(ctx: Context) -> dict[str, float]:
    root = ctx.scratch("ticks")
    out = root / "ticks.txt"
    project = fnrun_app.write_project(root, TICKS.format(out=out), {"tick.py": TICK_HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name="fnrun-ticks")
    ticks = int(ctx.pick(20, 5))
    try:
        supervisor.wait_ready()
        # The first tick also pays the worker's cold start: drop it.
        records = pacing.wait_for_lines(out, ticks + 1, ticks + 30)[1:ticks + 1]
    finally:
        supervisor.stop()
    delays = [(float(b) - float(a)) * 1000 for a, b in (r.split() for r in records)]
    return {"tick p50 ms": percentile(delays, 50), **high_ms(delays, "tick ")}


def _many_schedules() -> str:
    lines = ["functions:"]
    for index in range(SCHEDULES):
        lines += [f"  idle-{index:04d}:", "    handler: idle.py:noop", "    triggers:",
                  '      - schedule: {cron: "0 0 1 1 *", catch_up: none}']
    return "\n".join(lines) + "\n"


def _cpu_tree(pid: int) -> dict[int, float]:
    found = {}
    for member in [pid, *descendants(pid)]:
        try:
            found[member] = cpu_seconds(member)
        except (OSError, IndexError):
            continue
    return found


def idle_cpu(ctx: Context) -> dict[str, float]:
    project = fnrun_app.write_project(ctx.scratch("idle"), _many_schedules(),
                                      {"idle.py": IDLE_HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name="fnrun-idle")
    window = ctx.pick(30, 10)
    try:
        supervisor.wait_ready(timeout=120)
        time.sleep(SETTLE)
        before, began = _cpu_tree(supervisor.pid), time.monotonic()
        time.sleep(window)
        after, elapsed = _cpu_tree(supervisor.pid), time.monotonic() - began
    finally:
        supervisor.stop()
    used = sum(after[p] - before.get(p, 0.0) for p in after)
    return {"idle CPU % of a core": 100 * used / elapsed}


SCENARIO = Scenario(
    name="schedules",
    title="Schedule tick latency and idle CPU with 1,000 schedules",
    cases=[Case("fnrun tick", tick_latency), Case("fnrun 1,000 schedules", idle_cpu)],
    targets={
        ("fnrun tick", "tick p50 ms"): Target("<= 20 ms", lambda v: v <= 20),
        ("fnrun tick", "tick max ms"): Target("<= 100 ms (a p99 target, held by the max)",
                                              lambda v: v <= 100),
        ("fnrun 1,000 schedules", "idle CPU % of a core"): Target("<= 2%", lambda v: v <= 2),
    },
    notes=(
        "Tick latency over 20 ticks of `* * * * * *` after dropping the first (cold worker): "
        "p50 and the maximum (20 samples cannot place a p99; the issue's p99 target is "
        "checked against the maximum). "
        "Idle CPU over 30 s (10 s with --quick), starting 3 s after /_/health answers 200, "
        "supervisor plus its children; the 1,000 yearly schedules never fire in the window. "
        "No peer here: the issue sets absolute targets."
    ),
)
