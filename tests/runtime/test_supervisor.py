"""The supervisor as a process owner: what it does to its own interpreter."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.supervised import one_function, running

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
    project = one_function(tmp_path, "echo", "def handle(event):\n    return 1\n", "event: t.go")
    async with running(project, f"sqlite:///{tmp_path}/state.db", within=30,
                       freeze_heap=freeze):
        frozen = gc.get_freeze_count()
    # Frozen objects are skipped by the collector's full passes (no 20-30 ms stalls).
    assert (frozen > 10_000) if freeze else (frozen == 0)
