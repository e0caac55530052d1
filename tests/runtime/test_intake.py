"""The ingress of a real supervisor: when it takes events, what it stores, its sync calls.

A real project of one function, real worker processes, a real SQLite file and
the supervisor's HTTP front on a free port.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from runtime.delivery.intake import Phase
from runtime.events import Event
from runtime.project.manifest import load_settings
from runtime.store.base import Store
from runtime.store.runs import RunRecord
from runtime.supervisor import Supervisor
from tests.runtime.supervised import one_function

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ECHO = "def handle(event):\n    return event.data\n"


async def test_the_ingress_takes_events_exactly_while_the_supervisor_serves(
    tmp_path: Path,
) -> None:
    project = one_function(tmp_path, "echo", ECHO, "event: t.go")
    settings = load_settings(project, store=f"sqlite:///{tmp_path}/state.db", port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False)
    ingress, view = supervisor.ingress, supervisor.view
    assert (ingress.phase, ingress.accepting, view.draining) == (Phase.STARTING, False, False)
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            assert (ingress.phase, ingress.accepting, view.draining) == (
                Phase.SERVING, True, False)
            assert supervisor.http_server is not None
            async with httpx.AsyncClient(base_url=supervisor.http_server.url) as client:
                health = await client.get("/_/health")
            assert (health.status_code, health.json()["status"]) == (200, "ok")
            assert ingress.targets("t.go") == ["echo"] and ingress.targets("t.other") == []

            first = Event(type="t.go", source="tests", id="e1", data=1)
            assert await ingress.publish([first]) == [True]
            assert await ingress.publish([first]) == [False]  # stored once, by id
            [delivered] = await _runs_of(ingress.store, "echo", expected=1)
            assert (delivered.event_id, delivered.status) == ("e1", "ok")
            assert delivered.result == {"json": 1}

            call = Event(type="t.go", source="tests", data=7)
            called_id = call.id
            called = await ingress.invoke("echo", call)
            assert called.ok and called.result == {"json": 7}
            missing = await ingress.invoke("nope", Event(type="t.go", source="tests"))
            assert (missing.status, missing.error) == ("error", "function 'nope' is not loaded")
            # The delivery ran once, the sync call once (its history is written in the
            # background), the call to nothing not at all; nothing is left to run.
            runs = await _runs_of(ingress.store, "echo", expected=2)
            assert sorted(run.event_id for run in runs) == sorted(["e1", called_id])
            assert await ingress.store.runs(function="nope") == []
            assert await ingress.store.counts() == {}
            supervisor.request_stop()
    assert (ingress.phase, ingress.accepting, view.draining) == (Phase.STOPPING, False, True)


async def _runs_of(store: Store, function: str, expected: int) -> list[RunRecord]:
    """`function`'s run records once there are `expected` of them (within 10 s)."""
    with anyio.fail_after(10):
        while len(runs := await store.runs(function=function, limit=100)) < expected:
            await anyio.sleep(0.05)
    return runs
