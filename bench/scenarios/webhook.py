"""Scenario 4: webhook HTTP at 32 connections, measured with wrk.

fnrun sync (the no-op's return value is the response) and async (202 after
the durable commit) against functions-framework on its default server (one
gunicorn worker) and on two (fnrun runs a supervisor and two workers), and a
bare ASGI app on uvicorn, the ceiling.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from bench import fnrun_app, wrk
from bench.harness import Case, Context, NotAvailable, Scenario, Target
from bench.procs import REPO, Service, cpu_seconds, free_port, wait_until

DECLARATIONS = """\
functions:
  hook-sync:
    handler: hooks.py:noop
    concurrency: 2
    triggers:
      - webhook: {path: /hooks/sync, methods: [POST], mode: sync}
  hook-async:
    handler: hooks.py:noop
    concurrency: 2
    triggers:
      - webhook: {path: /hooks/async, methods: [POST], mode: async}
"""
HANDLER = """\
def noop(event):
    return "ok"
"""
BIN = Path(sys.executable).parent


def _seconds(ctx: Context) -> tuple[float, float]:
    """(warm-up, measured) durations."""
    return (1, 3) if ctx.quick else (2, 10)


def _measure(ctx: Context, url: str) -> dict[str, float]:
    warm, measured = _seconds(ctx)
    scratch = ctx.scratch("webhook")
    wrk.load(url, warm, scratch)
    return wrk.load(url, measured, scratch)


def fnrun_webhook(ctx: Context, mode: str, tree: Path | None = None,
                  seconds: tuple[float, float] | None = None) -> dict[str, float]:
    """wrk against `fnrun run` (of `tree`, this checkout by default): req/s, p99, and the
    supervisor's own CPU per request over the measured run (from /proc, children excluded).

    `seconds` is (warm-up, measured), the scenario's by default.
    """
    project = fnrun_app.write_project(ctx.scratch("webhook"), DECLARATIONS,
                                      {"hooks.py": HANDLER})
    supervisor = fnrun_app.Supervisor(ctx, project, fnrun_app.sqlite_url(project),
                                      name=f"fnrun-webhook-{mode}", tree=tree)
    warm, measured = seconds or _seconds(ctx)
    try:
        supervisor.wait_ready()
        probe = supervisor.http.post(f"/hooks/{mode}", json={"bench": True})
        if probe.status_code not in (200, 202):
            raise NotAvailable(f"POST /hooks/{mode} answered {probe.status_code}")
        url, scratch = f"{supervisor.base}/hooks/{mode}", ctx.scratch("wrk")
        wrk.load(url, warm, scratch)
        before = cpu_seconds(supervisor.pid)
        numbers = wrk.load(url, measured, scratch)
        used = cpu_seconds(supervisor.pid) - before
        numbers["cpu us/req"] = used / (numbers["req/s"] * round(measured)) * 1e6
        return numbers
    finally:
        supervisor.stop()


def fnrun_hook(mode: str) -> Case:
    return Case(f"fnrun {mode}", lambda ctx: fnrun_webhook(ctx, mode))


def _serve(ctx: Context, argv: list[str], name: str, port: int,
           env: dict[str, str] | None = None) -> dict[str, float]:
    service = Service(argv, ctx.logs / f"{name}.log", env)
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if not service.alive():
            raise RuntimeError(f"{name} exited: {service.tail(3)}")
        try:
            return httpx.post(url, json={"bench": True}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 60, f"{name} to answer", every=0.05)
        return _measure(ctx, url)
    finally:
        service.stop()


def functions_framework(workers: int) -> Case:
    """functions-framework on its gunicorn server with `workers` processes (WORKERS)."""
    def measure(ctx: Context) -> dict[str, float]:
        port = free_port()
        argv = [str(BIN / "functions-framework"), "--target", "noop",
                "--source", str(REPO / "bench" / "peers" / "ff_main.py"), "--port", str(port),
                "--host", "127.0.0.1"]
        return _serve(ctx, argv, f"functions-framework-{workers}", port,
                      {"WORKERS": str(workers)})

    name = "functions-framework" if workers == 1 else f"functions-framework {workers} workers"
    return Case(name, measure)


def bare_uvicorn(ctx: Context) -> dict[str, float]:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "bench.peers.asgi_app:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]
    return _serve(ctx, argv, "uvicorn", port)


SCENARIO = Scenario(
    name="webhook",
    title="Webhook HTTP at 32 connections (wrk)",
    cases=[
        fnrun_hook("sync"),
        fnrun_hook("async"),
        functions_framework(1),
        functions_framework(2),
        Case("uvicorn bare ASGI (ceiling)", bare_uvicorn),
    ],
    targets={
        ("fnrun sync", "req/s"): Target(">= 10,000/s", lambda v: v >= 10_000),
        ("fnrun sync", "p99 ms"): Target("<= 10 ms", lambda v: v <= 10),
        ("fnrun async", "req/s"): Target(">= 8,000/s", lambda v: v >= 8_000),
    },
    notes=(
        "wrk -t2 -c32 --latency, POST of a small JSON body, after a warm-up run; wrk shares "
        "the 2 cores with the server. fnrun functions have concurrency 2; the async webhook "
        "answers 202 after the durable SQLite commit while its deliveries drain alongside. "
        "functions-framework runs its default server (gunicorn, 1 worker process of 8 "
        "threads) and, like for like with fnrun's supervisor and 2 workers, with 2 gunicorn "
        "workers (WORKERS=2); uvicorn one process without access log. fnrun's rows add the "
        "supervisor's own CPU per request (children excluded)."
    ),
)
