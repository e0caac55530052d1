"""Wake-ups for commits made by other processes on the same SQLite file.

`fnrun emit` (or any other process) commits without a way to notify the
running supervisor. One waiter at a time, the watcher, looks every
`EXTERNAL_POLL` whether another connection committed, and wakes every waiter
if so; the others just wait. With 1,000 idle functions that is 5 queries a
second, not 5,000.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from runtime.store.base import Store

EXTERNAL_POLL = 0.2
"""How often an idle store looks for commits by other processes."""


class ExternalCommits:
    """`Store.wait_for_work` for a store that other processes also write."""

    def __init__(self, store: Store, data_version: Callable[[], Awaitable[int]]) -> None:
        self._store = store
        self._data_version = data_version
        """A number that changes when another connection commits (PRAGMA data_version)."""
        self._watching = False

    async def wait(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        wakeups = self._store._wakeups  # the store's own waiters, woken by its notify()
        wakeup = wakeups.setdefault(function, anyio.Event())
        with anyio.move_on_after(timeout):
            if self._watching:
                await wakeup.wait()
                return
            self._watching = True
            try:
                await self._watch(wakeup)
            finally:
                self._watching = False
                self._hand_over_watch(function)

    async def _watch(self, wakeup: anyio.Event) -> None:
        seen = await self._data_version()
        while True:
            with anyio.move_on_after(EXTERNAL_POLL):
                await wakeup.wait()
            if wakeup.is_set():
                return
            if await self._data_version() != seen:
                for function in list(self._store._wakeups):
                    self._store.notify(function)
                return

    def _hand_over_watch(self, leaving: str) -> None:
        """Wake one other waiter so that it becomes the watcher."""
        for function in self._store._wakeups:
            if function != leaving:
                self._store.notify(function)
                return
