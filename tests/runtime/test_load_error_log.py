"""A handler that cannot load is reported once, with what an operator needs to fix it."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import httpx
import pytest

from runtime.manifest import load_settings
from runtime.supervisor import Supervisor

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
    functions = tmp_path / "proj" / "functions"
    functions.mkdir(parents=True)
    (functions / "b.py").write_text(BROKEN)
    (functions / "b.yaml").write_text(
        "functions:\n  b:\n    handler: b.py:handle\n    triggers:\n      - event: b.go\n"
    )
    settings = load_settings(tmp_path / "proj", store=f"sqlite:///{tmp_path}/state.db", port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            assert supervisor.http_server is not None
            async with httpx.AsyncClient(base_url=supervisor.http_server.url) as client:
                answer = await client.post("/_/events", json={
                    "specversion": "1.0", "id": "e1", "source": "t", "type": "b.go",
                }, headers={"content-type": "application/cloudevents+json"})
                assert answer.status_code == 202
            # Loaded at start, in a worker: not served, its delivery waits (SPEC 5.5).
            assert "b" not in supervisor.fingerprints()
            assert supervisor.health_detail()["load_errors"] == {
                "b": f"{functions / 'b.py'}:4:1: RuntimeError: not deployable yet"
            }
            counts = await supervisor.store.counts()
            assert (counts["b"].pending, counts["b"].running) == (1, 0)
            supervisor.request_stop()

    lines = [r.getMessage() for r in caplog.records if "not deployable yet" in r.getMessage()]
    assert len(lines) == 1, lines
    [line] = lines
    assert line.startswith("function b: cannot load ")
    assert line.endswith(f"{functions / 'b.py'}:handle: {functions / 'b.py'}:4:1: "
                         "RuntimeError: not deployable yet")
