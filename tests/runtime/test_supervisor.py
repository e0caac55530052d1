"""The supervisor as a process owner: what it does to its own interpreter."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from runtime.manifest import load_settings
from runtime.supervisor import Supervisor

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process keeps collecting what it allocates


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_heap_loaded_at_startup_is_frozen_only_by_a_process_owner(
    tmp_path: Path, unfrozen: None, freeze: bool
) -> None:
    functions = tmp_path / "proj" / "functions"
    functions.mkdir(parents=True)
    (functions / "echo.yaml").write_text(
        "functions:\n  echo:\n    handler: echo.py:handle\n    triggers:\n      - event: t.go\n"
    )
    (functions / "echo.py").write_text("def handle(event):\n    return 1\n")
    settings = load_settings(tmp_path / "proj", store=f"sqlite:///{tmp_path}/state.db", port=0)
    supervisor = Supervisor(settings, grace=5, handle_signals=False, freeze_heap=freeze)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            frozen = gc.get_freeze_count()
            supervisor.request_stop()
    # Frozen objects are skipped by the collector's full passes (no 20-30 ms stalls).
    assert (frozen > 10_000) if freeze else (frozen == 0)
