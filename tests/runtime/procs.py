"""Process helpers shared by the worker tests: liveness from /proc, polling with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def wait_for(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await anyio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s")
