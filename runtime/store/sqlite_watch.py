"""Wake-ups for commits made by other processes on the same SQLite file.

`fnrun emit` (or any other process) commits without a way to notify the
running supervisor. One waiter at a time, the watcher, looks every
`EXTERNAL_POLL` whether another connection committed, and wakes every
dispatcher if so; the others just wait. With 1,000 idle functions that is 5
queries a second, not 5,000.

"Committed" means: since the last time every dispatcher was woken for such
a commit (`seen`), not since this watch began. A commit that landed between
a dispatcher's claim and the first look of a new watch was otherwise taken
as the starting point, and the work it stored waited for the idle poll
(issue 17 point 11). So is a dispatcher that was busy claiming while the
commit was noticed: it is woken too (`Store.wake_all`), its claim may have
run before the commit.
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
        self.seen: int | None = None
        """The data version every dispatcher was last woken for (or the store opened at)."""
        self._watching = False

    async def wait(self, function: str, timeout: float) -> None:  # noqa: ASYNC109
        store = self._store
        if self._watching:
            await store.wait_for_notify(function, timeout)
            return
        if store.take_wakeup(function):
            return
        self._watching = True
        try:
            with anyio.move_on_after(timeout):
                await self._watch(function)
        finally:
            self._watching = False
            self._hand_over_watch(function)

    async def _watch(self, function: str) -> None:
        store = self._store
        while not await store.wait_for_notify(function, EXTERNAL_POLL):
            version = await self._data_version()
            if self.seen is None:
                self.seen = version
            elif version != self.seen:
                self.seen = version
                store.wake_all()
                store.take_wakeup(function)  # this one returns now anyway
                return

    def _hand_over_watch(self, leaving: str) -> None:
        """Wake one other waiter so that it becomes the watcher."""
        for function in self._store.waiting():
            if function != leaving:
                self._store.notify(function)
                return
