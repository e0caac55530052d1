"""SPEC 11, end to end: every run kept with its logs, error, traceback and emitted events.

A handler that logs three lines, prints to stderr, emits two events and fails
on its first attempt: both attempts' records hold all of it, in both stores.
Sync webhook calls and `fnrun invoke` keep their traceback too.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from runtime import plugins
from runtime.project.settings_loader import load_settings
from runtime.store.base import RunRecord
from tests.e2e.harness import Project, fnrun, wait_until

pytestmark = pytest.mark.timeout(120)

FUNCTIONS = """
    functions:
      pay:
        handler: pay.py:pay
        triggers: [{event: order.placed}]
        retry: {max_attempts: 3, backoff: 100ms, max_backoff: 100ms}
      hook:
        handler: pay.py:hook
        triggers: [{webhook: {path: /hook, methods: [POST], mode: sync}}]
"""
CODE = """
    import sys

    def pay(event, ctx):
        record(event, ctx)
        for step in ("reserve", "charge", "confirm"):
            ctx.log.info("%s order %s", step, event.data["order"])
        print(f"attempt {ctx.attempt} on stderr", file=sys.stderr)
        ctx.emit("mail.send", {"order": event.data["order"]})
        ctx.emit("stock.take", {"order": event.data["order"]})
        if ctx.attempt == 1:
            raise RuntimeError("card declined")
        return {"paid": event.data["order"]}

    def hook(event, ctx):
        print("hook called")
        raise ValueError("kaboom")
"""


def runs(project: Project, **filters: Any) -> list[RunRecord]:
    """What the project's store keeps, read as the dashboard and `fnrun logs` read it."""
    settings = load_settings(project.root)

    async def read() -> list[RunRecord]:
        async with plugins.store_for(settings.store) as store:
            return await store.runs(**filters)

    return anyio.run(read)


def test_both_attempts_keep_logs_stderr_emits_and_the_error(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("pay", FUNCTIONS, CODE)
    project.start()
    [event_id] = project.publish([{"type": "order.placed", "data": {"order": 7}}])
    second, first = wait_until(lambda: len(found := runs(project, function="pay")) == 2 and found)

    assert (first.attempt, first.status, first.event_id, first.event_type) == (
        1, "error", event_id, "order.placed")
    assert first.error == "RuntimeError: card declined"
    assert first.traceback is not None and 'raise RuntimeError("card declined")' in first.traceback
    assert first.emitted == ()  # a failed attempt's emits are not committed
    assert (second.attempt, second.status, second.error, second.traceback) == (2, "ok", None, None)
    assert second.result == {"json": {"paid": 7}}
    assert second.seq > first.seq and second.invocation != first.invocation
    for run in (first, second):
        assert [(line.stream, line.level, line.text) for line in run.logs] == [
            ("log", "info", "reserve order 7"), ("log", "info", "charge order 7"),
            ("log", "info", "confirm order 7"),
            ("stderr", "", f"attempt {run.attempt} on stderr"),
        ]
        assert all(run.started <= line.at <= run.started + run.duration for line in run.logs)
        # The invocation id `fnrun dev` tags the attempt's lines with finds its record.
        wait_until(lambda r=run: f"[pay {r.invocation}] reserve order 7" in project.output())

    # The two emitted events were committed with the success, and ran nowhere (no trigger).
    assert len(second.emitted) == 2
    emitted = {e: runs(project, event_id=e) for e in second.emitted}
    assert emitted == {e: [] for e in second.emitted}
    settings = load_settings(project.root)

    async def stored_events() -> list[Any]:
        async with plugins.store_for(settings.store) as store:
            return [await store.event(e) for e in second.emitted]

    assert [e.type for e in anyio.run(stored_events)] == ["mail.send", "stock.take"]
    # The older listing still shows both attempts.
    listed = project.history()
    assert [(h["attempt"], h["outcome"]) for h in listed if h["function"] == "pay"] == [
        (2, "ok"), (1, "error")]


def test_sync_calls_and_invoke_keep_their_traceback(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("pay", FUNCTIONS, CODE)
    proc = project.start()
    answer = httpx.post(project.url("/hook"), json={"x": 1}, timeout=10)
    assert answer.status_code == 500
    [call] = wait_until(lambda: runs(project, function="hook"))
    assert (call.status, call.error, call.event_type) == ("error", "ValueError: kaboom",
                                                          "fnrun.webhook")
    assert call.traceback is not None and 'raise ValueError("kaboom")' in call.traceback
    assert [(line.stream, line.text) for line in call.logs] == [("stdout", "hook called")]
    project.stop(proc)

    failed = fnrun("invoke", "hook", "--data", "{}", "--project", str(project.root), check=False)
    assert failed.returncode == 1 and "ValueError: kaboom" in failed.stderr
    newest, older = runs(project, function="hook")
    assert older == call and newest.seq > call.seq
    assert newest.traceback is not None and 'raise ValueError("kaboom")' in newest.traceback
    assert [(line.stream, line.text) for line in newest.logs] == [("stdout", "hook called")]


ENDS = """
    functions:
      slow:
        handler: ends.py:slow
        triggers: [{event: job.slow}]
        timeout: 1s
        retry: false
      dies:
        handler: ends.py:dies
        triggers: [{event: job.dies}]
        retry: false
"""
ENDS_CODE = """
    import os, sys, time

    def slow(event, ctx):
        ctx.log.info("started %s", event.data)
        print("before the wait", flush=True)
        time.sleep(30)

    def dies(event, ctx):
        print("about to exit", flush=True)
        print("on stderr", file=sys.stderr, flush=True)
        os._exit(3)
"""


def test_a_timed_out_or_crashed_run_keeps_what_it_printed(project_on_each_store: Project) -> None:
    project = project_on_each_store
    project.add("ends", ENDS, ENDS_CODE)
    project.start()
    project.publish([{"type": "job.slow", "data": 1}, {"type": "job.dies", "data": 2}])
    [slow] = wait_until(lambda: runs(project, function="slow"))
    [dies] = wait_until(lambda: runs(project, function="dies"))

    assert slow.status == "timeout"
    assert [(line.stream, line.level, line.text) for line in slow.logs] == [
        ("log", "info", "started 1"), ("stdout", "", "before the wait")]
    assert dies.status == "crash"
    assert [(line.stream, line.level, line.text) for line in dies.logs] == [
        ("stdout", "", "about to exit"), ("log", "warning", "on stderr")]
