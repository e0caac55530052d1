"""Scenario 3: worker cold start (spawn -> ready) and idle worker RSS.

fnrun: a fresh `runtime.pool.workerpool.WorkerPool` per sample, timed over its first
invocation of a no-op (start, import, ready, one round trip). Its workers fork
from the fork server's template (started once per process, not timed here);
the second fnrun case forces the fallback, a new interpreter per worker, through
a `PYTHON*` variable in the function's env. Baselines: a bare
`python -c` child that writes "ready" on a pipe, with and without importing
anyio and yaml. RSS is VmRSS from /proc/PID/status, read once the process idles.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

from bench import fnrun_app
from bench.harness import Case, Context, Scenario, Target
from bench.peers.pipe_child import BARE, WITH_IMPORTS
from bench.procs import rss_mb

SAMPLES = 7
"""Cold starts per run; the run reports their median."""
SETTLE = 0.3
"""Seconds a process idles before its RSS is read."""
HANDLER = """\
import os


def noop(event):
    return os.getpid()
"""


def _summary(starts: list[float], rss: list[float]) -> dict[str, float]:
    return {"cold start ms": statistics.median(starts), "idle RSS MB": statistics.median(rss)}


def fnrun_worker(ctx: Context, env: dict[str, str] | None = None) -> dict[str, float]:
    fnrun_app.require("runtime.pool.workerpool", "the worker pool")
    from runtime.errors import Where
    from runtime.events import Event
    from runtime.pool.workerpool import WorkerPool
    from runtime.specs import FunctionSpec

    folder = ctx.scratch("coldstart")
    handler = folder / "noop.py"
    handler.write_text(HANDLER)
    spec = FunctionSpec(name="noop", where=Where(handler, 1, 1), handler_file=handler,
                        handler_attr="noop", timeout=30, env=env or {})
    log = logging.getLogger("bench.coldstart")

    async def sample() -> tuple[float, float]:
        pool = WorkerPool(spec, log=log)
        try:
            began = time.perf_counter()
            outcome = await pool.invoke(Event(type="bench.cold"), 1)
            took = (time.perf_counter() - began) * 1000
            if not outcome.ok:
                raise RuntimeError(f"no-op failed: {outcome.error}")
            await anyio.sleep(SETTLE)
            return took, rss_mb(_pid(outcome.result))
        finally:
            await pool.aclose(grace=5)

    samples = [anyio.run(sample) for _ in range(SAMPLES)]
    return _summary([s[0] for s in samples], [s[1] for s in samples])


def _pid(result: object) -> int:
    """The worker pid the no-op returned, as encoded by the worker protocol."""
    if isinstance(result, dict) and "json" in result:
        result = result["json"]
    if not isinstance(result, int):
        raise RuntimeError(f"unexpected no-op result {result!r}")
    return result


def pipe_child(source: str, *flags: str) -> dict[str, float]:
    starts, rss = [], []
    for _ in range(SAMPLES):
        began = time.perf_counter()
        child = subprocess.Popen([sys.executable, *flags, "-c", source], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdin is not None
        if child.stdout.readline() != b"ready\n":
            raise RuntimeError("the child did not say ready")
        starts.append((time.perf_counter() - began) * 1000)
        time.sleep(SETTLE)
        rss.append(rss_mb(child.pid))
        child.stdin.write(b"\n")
        child.stdin.close()
        child.wait(5)
    return _summary(starts, rss)


SCENARIO = Scenario(
    name="coldstart",
    title="Worker cold start and idle RSS",
    cases=[
        Case("fnrun worker", fnrun_worker),
        Case("fnrun worker, new interpreter",
             lambda ctx: fnrun_worker(ctx, {"PYTHONBENCHSPAWN": "1"})),
        Case("python -c child", lambda ctx: pipe_child(BARE)),
        Case("python -S -c child", lambda ctx: pipe_child(BARE, "-S")),
        Case("python -c child + anyio,yaml", lambda ctx: pipe_child(WITH_IMPORTS)),
    ],
    targets={
        ("fnrun worker", "cold start ms"): Target("<= 25 ms", lambda v: v <= 25),
        ("fnrun worker", "idle RSS MB"): Target("<= 12 MB", lambda v: v <= 12),
    },
    notes=(
        f"Median of {SAMPLES} starts per run. fnrun's figure is start -> ready -> first no-op "
        "answered (one round trip more than the baselines' spawn -> 'ready'). fnrun forks its "
        "workers from a template process (a fresh `python -S` that imported only the worker "
        "module, started once per supervisor); 'new interpreter' is its fallback path, a "
        "`python -S` per worker (forced by a PYTHON* variable in the function's env), whose "
        "floor is `python -S -c`. All use the "
        f"bench venv's interpreter ({Path(sys.executable).name}); RSS read after "
        f"{SETTLE:g}s idle."
    ),
)
