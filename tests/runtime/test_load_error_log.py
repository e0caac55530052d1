"""A handler that cannot load is reported once, with what an operator needs to fix it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.runtime.supervised import one_function, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

BROKEN = """\
def handle(event):
    pass

raise RuntimeError("not deployable yet")
"""


async def test_a_load_failure_is_logged_once_with_function_and_handler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    project = one_function(tmp_path, "b", BROKEN, "event: b.go")
    functions = project / "functions"
    async with running(project, f"sqlite:///{tmp_path}/state.db", within=30) as (
        supervisor, client
    ):
        answer = await client.post("/_/events", json={
            "specversion": "1.0", "id": "e1", "source": "t", "type": "b.go",
        }, headers={"content-type": "application/cloudevents+json"})
        assert answer.status_code == 202
        # Loaded at start, in a worker: not served, its delivery waits (SPEC 5.5).
        assert "b" not in supervisor.serving().fingerprints
        assert supervisor.view.health_detail()["load_errors"] == {
            "b": f"{functions / 'b.py'}:4:1: RuntimeError: not deployable yet"
        }
        counts = await supervisor.store.counts()
        assert (counts["b"].pending, counts["b"].running) == (1, 0)

    lines = [r.getMessage() for r in caplog.records if "not deployable yet" in r.getMessage()]
    assert len(lines) == 1, lines
    [line] = lines
    assert line.startswith("function b: cannot load ")
    assert line.endswith(f"{functions / 'b.py'}:handle: {functions / 'b.py'}:4:1: "
                         "RuntimeError: not deployable yet")
