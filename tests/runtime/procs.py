"""Process helpers shared by the tests: liveness from /proc, polling with a deadline,
reading the lines worker processes append to a log."""

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


def appended_lines(log: Path) -> list[str]:
    """The complete lines of `log` (none if it does not exist yet).

    A worker's append can be read half-done (a write that crosses a page
    boundary becomes visible page by page), so a trailing line without its
    newline is left for the next poll instead of failing the parse.
    """
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text[:text.rfind("\n") + 1].splitlines() if line]


async def wait_for(predicate: Callable[[], Any], within: float = 10.0) -> Any:
    """Poll `predicate` until it returns something truthy, or fail after `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await anyio.sleep(0.01)
    raise AssertionError(f"condition not met within {within}s")
