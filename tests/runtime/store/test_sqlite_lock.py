"""One supervisor per SQLite file: `recover` takes the file's lock (runtime/store/sqlite_lock)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runtime.errors import StoreError
from runtime.events import Event
from runtime.store.base import Counts
from runtime.store.sqlite import SqliteStore
from runtime.store.sqlite_lock import lock_path

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_second_store_cannot_recover_while_the_first_holds_the_file(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with SqliteStore(url) as first:
        assert await first.recover() == 0
        await first.publish([(Event(type="x", id=f"e{n}"), ["f"]) for n in range(3)])
        assert len(await first.claim("f", 2, time.time())) == 2
        async with SqliteStore(url) as second:
            held = rf"in use by another fnrun run \(pid {os.getpid()}\)"
            with pytest.raises(StoreError, match=held):
                await second.recover()
            # Publishing and reading need no lock: `fnrun emit` and `ls` work meanwhile.
            await second.publish([(Event(type="x", id="late"), ["f"])])
            assert (await second.counts())["f"] == Counts(pending=2, running=2)
        assert await first.recover() == 2  # the owner may recover again (it holds the lock)
    async with SqliteStore(url) as third:  # closed: the lock is free again
        assert await third.recover() == 0
        assert (await third.counts())["f"] == Counts(pending=4)
    assert lock_path(tmp_path / "state.db").exists()


async def test_an_unopenable_lock_file_is_one_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    async with SqliteStore(url) as store:
        lock_path(tmp_path / "state.db").mkdir()  # a folder where the lock file goes
        with pytest.raises(StoreError, match="cannot open lock file .*state.db.lock"):
            await store.recover()
