"""One supervisor per SQLite file: an exclusive lock on a file beside the database.

A supervisor starting on a store makes every delivery left `running` pending
again (`SqliteStore.recover`): they are orphans of a dead supervisor only if
no other supervisor is alive on the file. A second `fnrun run` on the same
file reset the first one's running deliveries, which then ran twice. The
supervisor now holds `flock(LOCK_EX)` on `<database>.lock` for its life; the
kernel drops it when the process ends, however it ends (kill -9 included), so
a restart never waits for a stale lock. Commands that only publish or read
(`fnrun emit`, `ls`, `history`) do not take it: SQLite's own locking lets
them work beside a running supervisor.

`flock` rather than `fcntl` record locks: record locks belong to the process
and are all dropped when it closes *any* descriptor of the file, and an
open-file-description lock is what `flock` gives. The descriptor is
close-on-exec, so workers never hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runtime.errors import StoreError


def lock_path(database: Path) -> Path:
    """The lock file of `database`: `state.db` -> `state.db.lock`."""
    return database.with_name(database.name + ".lock")


class SupervisorLock:
    """The exclusive right to run deliveries of one SQLite store, held until `release`."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now, or fail: waiting would only hide a second supervisor.

        Raises:
            StoreError: another process holds it (named by pid when it wrote one),
                or the lock file cannot be opened.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                by = f" (pid {holder})" if holder else ""
                raise StoreError(
                    f"store {self.database} is in use by another fnrun run{by}: "
                    "one supervisor per SQLite store (stop it, or give this one its own "
                    "--store)") from None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        # Only for the message above: the lock is the flock, not this number.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> int | None:
    """The pid the current holder wrote into the lock file, if readable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
