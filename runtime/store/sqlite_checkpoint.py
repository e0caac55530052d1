"""WAL checkpoints on a thread and connection of their own.

A checkpoint copies the WAL's pages back into the database file so the WAL
can start over. SQLite runs one automatically inside the COMMIT that takes
the WAL past 1,000 pages, which made that commit take 1-2 ms instead of
0.2 ms (an fsync of the WAL, the copy, an fsync of the database) and held
up every hand-off queued behind it. The write connection therefore runs
with `wal_autocheckpoint=0`, and `GroupCommit` pokes this thread instead;
a PASSIVE checkpoint runs beside the writer without blocking it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("fnrun.store")

ROWS_PER_CHECKPOINT = 1000
"""Rows written between checkpoints: about SQLite's own 1,000 pages, in smaller steps."""


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` whenever poked, one at a time."""

    def __init__(self, path: Path, busy_timeout_ms: int) -> None:
        self._path = path
        self._busy_timeout = busy_timeout_ms / 1000
        self._wanted = threading.Event()
        self._stopping = False
        self._warned = False
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

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            # Nothing is lost: the WAL keeps every page, and the next poke
            # (or SQLite itself, when the last connection closes) tries again.
            if not self._warned:
                log.warning("WAL checkpoint of %s failed (will retry): %s", self._path, exc)
                self._warned = True
        else:
            self._warned = False
