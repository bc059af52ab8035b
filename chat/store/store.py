"""The store as its callers see it: writes through the batching writer, reads that include what is not committed.

The hub writes (``ready``, ``append``, ``claim``, ``release``) and reads on
joins; the mount reads for the HTTP API.  Nothing is opened before first use,
so a process forked by gunicorn opens its own connections and thread.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..backends import Unavailable
from .conversations import Access, Statement, Summary
from .records import STALE, Claim, Retention, Revision, Stored
from .sql import Database
from .writer import Writer

log = logging.getLogger(__name__)

#: Seconds between looks at a claim another connection holds.
CLAIM_POLL = 0.02

_open: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """Keep every chat message in a database, written in batches by one thread per process."""

    #: Whether what is recorded here outlives this process and is shared with the others.
    durable = True

    def __init__(self, database: Database, settings: dict[str, Any]) -> None:
        self.database = database
        self._retention = Retention(*settings["RETENTION"])
        self._prune_every: float = settings["RETENTION_INTERVAL"]
        self._lock = threading.Lock()
        self._writer: Writer | None = None
        self._closed = False

    def _started(self) -> Writer:
        # Set once under the lock, then only read: a message need not take the lock.
        writer = self._writer
        if writer is not None:
            return writer
        with self._lock:
            if self._closed:
                raise Unavailable("the message store is closed")
            if self._writer is None:
                self.database.open()
                newest = self.database.newest_id()
                if newest >= time.time_ns() // 1_000_000 * 1000:
                    log.warning("the clock is behind the store's newest id %d: new ids may not be above it", newest)
                writer = Writer(self.database, self._retention, self._prune_every)
                writer.start()
                self._writer = writer
                _open.add(self)
            return self._writer

    def start(self) -> None:
        """Open the database (creating its tables) and start the writer; raise Unavailable if it cannot be reached."""
        self._started()

    # Writing.

    def ready(self) -> None:
        """Raise Unavailable when a message published now could not be stored."""
        self._started().ready()

    def append(self, row: Stored | Revision, on_stored: Callable | None = None) -> None:
        """Queue a published message or change; on_stored(row) runs once it is committed."""
        self._started().append(row, on_stored)

    def claim(self, room: str, cid: str) -> int | None:
        """Return None when cid is new in room (the caller sends it), or the id it was sent under.

        A claim another connection holds is waited for until its message is
        stored, or until it is stale and this caller takes it over.
        """
        writer = self._started()
        deadline = time.monotonic() + STALE + CLAIM_POLL * 10
        while True:
            outcome = writer.claim(room, cid)
            if outcome is Claim.MINE:
                return None
            if outcome is not Claim.BUSY:
                return outcome
            if time.monotonic() > deadline:
                raise Unavailable("the chat did not answer in time: your message may not have been sent", True)
            time.sleep(CLAIM_POLL)

    def release(self, room: str, cid: str) -> None:
        """Give back a claim whose message was not sent, so that a resend is sent."""
        self._started().release(room, cid)

    def read(self, room: str, user: str, message_id: int) -> None:
        """Queue moving user's read position in room forward to message_id (written with the next batch)."""
        self._started().read(room, user, message_id)

    def change(self, statements: list[Statement]) -> None:
        """Write statements of conversations (conversations.put_room and the like) and wait until committed."""
        self._started().change(statements)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything appended so far is committed."""
        return self._started().flush(timeout)

    # Reading: what is committed, and what this process has queued.

    def newest(self, room: str, limit: int, after: int | None = None, before: int | None = None) -> list[Stored]:
        """Return the last limit messages of room between after and before (both excluded), oldest first."""
        # Both read before the database: a change committed meanwhile is in the rows or in the folds, never in neither.
        pending, folds = self._started().snapshot(room)
        rows = _merge(self.database.newest(room, limit, after, before), pending, after, before)
        return _folded(rows[-limit:] if limit else [], folds)

    def oldest(self, room: str, limit: int, after: int, before: int | None = None) -> list[Stored]:
        """Return the first limit messages of room after after (and before before), oldest first."""
        pending, folds = self._started().snapshot(room)
        rows = _merge(self.database.oldest(room, limit, after, before), pending, after, before)[:limit]
        return _folded(rows, folds)

    def changes(self, room: str, after: int, before: int, limit: int) -> list[Revision]:
        """Return the first limit committed changes of room between after and before, oldest first."""
        self._started()
        return self.database.changes(room, after, before, limit)

    def by_user(self, user: str, limit: int, before: int | None = None) -> list[Stored]:
        """Return the last limit committed messages user wrote in any room (before before), newest first."""
        self._started()
        return self.database.by_user(user, limit, before)

    def count(self, room: str, after: int, before: int) -> int:
        """Return how many messages of room lie between after and before, both excluded."""
        pending = self._started().pending(room)
        return self.database.count(room, after, before) + sum(after < row.id < before for row in pending)

    def floor(self, room: str) -> int | None:
        """Return the id from which the store holds every message of room, or None if it holds none."""
        pending = self._started().pending(room)
        floor = self.database.floor(room)
        if floor is None and pending:
            return min(row.id for row in pending)
        return floor

    def access(self, room: str) -> Access:
        """Return who may do what in room."""
        self._started()
        return self.database.access(room)

    def read_of(self, room: str, user: str) -> int | None:
        """Return the id user has read room up to (committed), or None if the user never joined or read it."""
        self._started()
        return self.database.read_of(room, user)

    def unread(self, room: str, user: str, after: int) -> int:
        """Return how many of others' messages in room lie after after (committed or queued)."""
        pending = self._started().pending(room)
        extra = sum(row.id > after and row.user != user for row in pending)
        return self.database.unread(room, user, after) + extra

    def rooms_of(self, user: str) -> list[Summary]:
        """Return user's rooms, newest activity first, once what is queued is committed."""
        self.flush()
        return self.database.rooms_of(user)

    def healthy(self) -> bool:
        """Tell whether the store answers: its writer runs, its last write went through, and a read does."""
        try:
            writer = self._started()
            self.database.probe()
        except Unavailable:
            return False
        return writer.healthy()

    def close(self) -> None:
        """Store what is queued, stop the writer and close the database."""
        with self._lock:
            self._closed = True
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            self.database.close()


def _folded(rows: list[Stored], folds: dict[int, str]) -> list[Stored]:
    """Return rows with the changes not yet committed folded in."""
    if not folds:
        return rows
    return [row.folded(folds[row.id]) if row.id in folds else row for row in rows]


def _merge(stored: list[Stored], pending: list[Stored], after: int | None, before: int | None) -> list[Stored]:
    if not pending:
        return stored
    rows = {row.id: row for row in stored}
    for row in pending:
        if (after is None or row.id > after) and (before is None or row.id < before):
            rows.setdefault(row.id, row)
    return [rows[key] for key in sorted(rows)]


@atexit.register
def _close_all() -> None:
    """Store what is queued when the interpreter exits (the writer's thread is a daemon)."""
    for store in list(_open):
        store.close()
