"""WAL checkpoints on a thread and connection of their own.

A checkpoint copies the WAL's pages back into the database file so the WAL
can start over. SQLite runs one automatically inside the COMMIT that takes
the WAL past 1,000 pages, which made that commit take 1-2 ms instead of
0.2 ms (an fsync of the WAL, the copy, an fsync of the database) and held
up every hand-off queued behind it. The write connection therefore runs
with `wal_autocheckpoint=0`, and `GroupCommit` pokes this thread instead;
a PASSIVE checkpoint runs beside the writer without blocking it.

A checkpoint running beside the writer never quite finishes under steady
load: new frames land while it copies. And the WAL starts over from its
beginning only when a transaction begins on a fully copied WAL, so it grew
without bound (350 MB after 12 s of async webhooks). So once the WAL has
run past `RESTART_FRAMES`, the writer itself finishes the copy (`catch_up`)
between two transactions: the few frames written since this thread's last
checkpoint, with no writer racing it. The next transaction then starts the
WAL over, and it stays at about that size (21 MB in the same run).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("fnrun.store")

ROWS_PER_CHECKPOINT = 1000
"""Rows written between checkpoints: about SQLite's own 1,000 pages, in smaller steps."""
RESTART_FRAMES = 4096
"""WAL frames (pages) past which the writer finishes a checkpoint itself: 16 MiB."""
WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""Bytes a WAL file is cut back to when it starts over (`PRAGMA journal_size_limit`)."""


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` whenever poked, one at a time."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout = busy_timeout_ms / 1000
        self._wanted = threading.Event()
        self._stopping = False
        self._warned = False
        self.frames = 0
        """The WAL's length in frames at the last checkpoint."""
        self._thread = threading.Thread(target=self._run, name="fnrun-checkpoint", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Ask for a checkpoint soon; pokes while one runs fold into the next."""
        self._wanted.set()

    def close(self) -> None:
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                self._checkpoint(conn)
        finally:
            conn.close()

    @property
    def due(self) -> bool:
        """The WAL has run past `RESTART_FRAMES`: the writer should `catch_up`."""
        return self.frames > RESTART_FRAMES

    def catch_up(self, conn: sqlite3.Connection) -> None:
        """On the write connection, between transactions: finish the copy.

        PASSIVE again: it does not wait for readers; if one holds old frames,
        the next call (before the next transaction) tries again.
        """
        self._checkpoint(conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if not busy:  # busy: another checkpoint was running; it reports for itself
                self.frames = frames
        except sqlite3.Error as exc:
            # Nothing is lost: the WAL keeps every page, and the next poke
            # (or SQLite itself, when the last connection closes) tries again.
            if not self._warned:
                log.warning("WAL checkpoint of %s failed (will retry): %s", self._path, exc)
                self._warned = True
        else:
            self._warned = False
