"""The SQLite dialect: one file in WAL mode, written by one connection per process, read by a few.

Commits use ``synchronous=NORMAL``: a commit is a write to the WAL with no
fsync, so it survives the process being killed but not the machine losing
power.  The writer checkpoints on its own schedule, not SQLite's
(``wal_autocheckpoint=0``): ``sync``, called once a second while there are
writes, runs a passive checkpoint, which fsyncs the WAL (bounding what a
power cut can take to about a second) and copies it into the database file.
A WAL still past ``WAL_LIMIT`` after it (other processes kept writing while
it ran) is truncated by a checkpoint that waits for them.  Several
processes of one host may share the file: SQLite serialises their write
transactions and ``busy_timeout`` makes each wait its turn.  sqlite3 knows
nothing of gevent, so under it every call runs in gevent's threadpool.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from .sql import Database

#: Milliseconds a write waits for another process's transaction to end.
BUSY_TIMEOUT_MS = 5000
#: Bytes of WAL past which a checkpoint waits for the other writers so that it can start the WAL afresh.
WAL_LIMIT = 64 * 1024 * 1024


class SQLite(Database):
    """Keep the store in one SQLite file."""

    errors = (sqlite3.Error,)

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def connect(self, write: bool) -> Any:
        """Open the file (creating it and its folder for the writer) in WAL mode, autocommitting."""
        if write:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        elif not os.path.exists(self.path):
            raise sqlite3.OperationalError(f"{self.path} does not exist yet")
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if write:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        else:
            conn.execute("PRAGMA query_only = ON")
        return conn

    def begin(self, conn: Any) -> None:
        """Take the write lock at once, so that a claim's read and write are one step across processes."""
        conn.execute("BEGIN IMMEDIATE")

    def sync(self) -> None:
        """Fsync the WAL and copy it into the database file; truncate a WAL that grew past WAL_LIMIT."""
        conn = self._writer
        if conn is None:
            return
        with self.reach():
            self.run(self._checkpoint, conn)

    def _checkpoint(self, conn: Any) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if os.path.getsize(self.path + "-wal") > WAL_LIMIT:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def path_of(url: str, instance_path: str) -> str:
    """Return the file of a sqlite:/// URL: four slashes for an absolute path, else under instance_path."""
    rest = url[len("sqlite:///"):]
    return rest if rest.startswith("/") else os.path.join(instance_path, rest)
