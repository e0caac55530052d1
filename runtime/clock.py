"""Time, injectable: loops take a Clock so tests can drive wall-clock time."""

from __future__ import annotations

import time
from typing import Protocol

import anyio


class Clock(Protocol):
    """Wall time for timestamps and schedules, monotonic time for timeouts."""

    def now(self) -> float:
        """Wall-clock time, epoch seconds."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for deadlines and sleeps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on the monotonic clock."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
