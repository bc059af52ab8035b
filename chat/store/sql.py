"""The store's database, whatever the dialect: its connections, the batch write, claims and reads.

Only the writer thread writes (one connection); reads, from any thread, take
one of a few pooled connections.  Driver errors become ``Unavailable``, and a
failed transaction drops its connection, so the next one starts afresh.
Under gevent, a driver that does not wait through gevent itself runs every
call in gevent's threadpool (``green``).  The tables and statements are in
``schema``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

from ..backends import Unavailable
from . import conversations, green
from .records import STALE, Claim, Revision, Stored
from .schema import (
    ADDED,
    BY_USER,
    CHANGES,
    COUNT_ROOM,
    FOLD,
    INSERT_ROWS,
    NEWEST,
    OLDEST,
    RELEASE,
    REVISE,
    SCHEMA,
    STORED_CLAIM,
    insert,
)

#: Bounds of an open range of ids.
LOWEST, HIGHEST = -1, 2**63 - 1
#: Most read connections kept per process.
READERS = 4

#: More writes for a batch's transaction: called with its cursor and the dialect's sql().
Also = Callable[[Any, Callable[[str], str]], None]


class Database:
    """Run the store's statements over DB-API connections that a dialect opens."""

    #: The exceptions of the driver that mean the database cannot answer now.
    errors: tuple[type[BaseException], ...] = ()
    #: Whether the driver waits through gevent's loop when gevent patched the process (else its calls are moved off it).
    cooperative = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        self._writer: Any = None

    # What a dialect provides.

    def connect(self, write: bool) -> Any:
        """Open a connection in autocommit mode."""
        raise NotImplementedError

    def begin(self, conn: Any) -> None:
        """Start a write transaction that holds the write lock until it ends."""
        conn.execute("BEGIN")

    def sql(self, statement: str) -> str:
        """Return statement in the driver's placeholder style."""
        return statement

    def create(self, conn: Any) -> None:
        """Create the tables if they are missing."""
        for statement in (*SCHEMA, *conversations.SCHEMA):
            conn.execute(statement)
        cursor = conn.cursor()
        cursor.execute("SELECT * FROM chat_messages LIMIT 0")
        have = {column[0] for column in cursor.description}
        for column, kind in ADDED:
            if column not in have:
                conn.execute(f"ALTER TABLE chat_messages ADD COLUMN {column} {kind}")

    def sync(self) -> None:
        """Make what is committed survive a machine crash, where a commit alone does not."""

    def run(self, work: Any, *args: Any) -> Any:
        """Return work(*args), off gevent's loop if the driver would block it."""
        return work(*args) if self.cooperative else green.call(work, *args)

    # Writing, from the writer thread only.

    def open(self) -> None:
        """Create the tables; raise Unavailable if the database cannot be reached."""
        with self.reach():
            self.transaction(self.create)

    def transaction(self, work: Any) -> Any:
        """Run work(connection) in one write transaction and return what it returns.

        A failure closes the writing connection, so that the next transaction
        starts on a fresh one (a server restart breaks every connection).
        """
        return self.run(self._transaction, work)

    def _transaction(self, work: Any) -> Any:
        conn = self._writer
        if conn is None:
            conn = self._writer = self.connect(write=True)
        try:
            self.begin(conn)
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            self._writer = None
            try:
                conn.close()
            except self.errors:
                pass
            raise
        return result

    def write(
        self, written: Sequence[Stored | Revision], claims: Sequence[tuple[str, str]],
        releases: Sequence[tuple[str, str]], now: float, also: Also | None = None,
    ) -> list[Claim | int]:
        """Store messages and changes, drop released claims, run also(cursor, sql) and make claims, in one transaction.

        Returns each claim's outcome.
        """
        rows = [row for row in written if type(row) is Stored]
        revisions = sorted((row for row in written if type(row) is Revision), key=lambda row: (row.room, row.id))

        def work(conn: Any) -> list[Claim | int]:
            cursor = conn.cursor()
            if rows:
                ordered = sorted(rows, key=lambda row: (row.room, row.id))
                for start in range(0, len(ordered), INSERT_ROWS):
                    part = ordered[start:start + INSERT_ROWS]
                    cursor.execute(self.sql(insert(len(part))), list(chain.from_iterable(part)))
                rooms: dict[str, list[int]] = {}
                for row in ordered:
                    counted = rooms.setdefault(row.room, [row.id, row.id, 0])
                    counted[1] = row.id
                    counted[2] += 1
                cursor.executemany(self.sql(COUNT_ROOM), [(room, *counted) for room, counted in rooms.items()])
                sent = [(row.room, row.cid, row.id, now) for row in ordered if row.cid is not None]
                if sent:
                    cursor.executemany(self.sql(STORED_CLAIM), sent)
            if revisions:
                cursor.executemany(self.sql(REVISE), [(*row[:8], None if row.on is None else int(row.on))
                                                      for row in revisions])
                cursor.executemany(self.sql(FOLD), [_fold(row) for row in revisions])
            if releases:
                cursor.executemany(self.sql(RELEASE), releases)
            if also is not None:
                also(cursor, self.sql)
            return [self._claim(cursor, room, cid, now) for room, cid in claims]

        with self.reach():
            return self.transaction(work)

    def _claim(self, cursor: Any, room: str, cid: str, now: float) -> Claim | int:
        cursor.execute(self.sql("INSERT INTO chat_claims (room, cid, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"),
                       (room, cid, now))
        if cursor.rowcount == 1:
            return Claim.MINE
        cursor.execute(self.sql("SELECT id, at FROM chat_claims WHERE room = ? AND cid = ?"), (room, cid))
        message_id, at = cursor.fetchone()
        if message_id is not None:
            return int(message_id)
        if at >= now - STALE:
            return Claim.BUSY
        # "at < stale" again: of two processes taking over at once, one wins.
        cursor.execute(self.sql("UPDATE chat_claims SET at = ? WHERE room = ? AND cid = ? AND id IS NULL AND at < ?"),
                       (now, room, cid, now - STALE))
        return Claim.MINE if cursor.rowcount == 1 else Claim.BUSY

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        writer, self._writer = self._writer, None
        for conn in [*idle, writer]:
            if conn is not None:
                self.run(conn.close)

    # Reading, from any thread.

    def newest(self, room: str, limit: int, after: int | None = None, before: int | None = None) -> list[Stored]:
        """Return the last limit messages of room between after and before (both excluded), oldest first."""
        rows = self._query(NEWEST, (room, LOWEST if after is None else after, HIGHEST if before is None else before,
                                    limit))
        return [Stored(*row) for row in reversed(rows)]

    def oldest(self, room: str, limit: int, after: int, before: int | None = None) -> list[Stored]:
        """Return the first limit messages of room after after (and before before), oldest first."""
        rows = self._query(OLDEST, (room, after, HIGHEST if before is None else before, limit))
        return [Stored(*row) for row in rows]

    def changes(self, room: str, after: int, before: int, limit: int) -> list[Revision]:
        """Return the first limit changes of room between after and before, oldest first."""
        rows = self._query(CHANGES, (room, after, before, limit))
        return [Revision(*row[:8], None if row[8] is None else bool(row[8]), row[9] or "{}") for row in rows]

    def by_user(self, user: str, limit: int, before: int | None = None) -> list[Stored]:
        """Return the last limit messages user wrote in any room (before before), newest first."""
        return [Stored(*row) for row in self._query(BY_USER, (user, HIGHEST if before is None else before, limit))]

    def count(self, room: str, after: int, before: int) -> int:
        """Return how many messages of room lie between after and before, both excluded."""
        return int(self._query("SELECT count(*) FROM chat_messages WHERE room = ? AND id > ? AND id < ?",
                               (room, after, before))[0][0])

    def floor(self, room: str) -> int | None:
        """Return the id after which the store holds every message of room, or None if it holds none."""
        rows = self._query("SELECT floor FROM chat_rooms WHERE room = ?", (room,))
        return int(rows[0][0]) if rows else None

    def newest_id(self) -> int:
        """Return the largest id stored in any room (0 when empty)."""
        return int(self._query("SELECT coalesce(max(top), 0) FROM chat_rooms", ())[0][0])

    def access(self, room: str) -> conversations.Access:
        """Return who may do what in room."""
        rows = self._query("SELECT private, dm FROM chat_conversations WHERE room = ?", (room,))
        return conversations.access(rows, self._query("SELECT kind, user_id FROM chat_members WHERE room = ?", (room,)))

    def read_of(self, room: str, user: str) -> int | None:
        """Return the id user has read room up to, or None if the user never joined or read it."""
        rows = self._query("SELECT id FROM chat_reads WHERE user_id = ? AND room = ?", (user, room))
        return int(rows[0][0]) if rows else None

    def unread(self, room: str, user: str, after: int) -> int:
        """Return how many of others' messages in room lie after after."""
        return int(self._query(conversations.UNREAD, (room, after, user, conversations.DELETED))[0][0])

    def rooms_of(self, user: str) -> list[conversations.Summary]:
        """Return user's rooms (members of, joined or read), newest activity first."""
        rows = self._query(conversations.ROOMS_OF, (user, user, user, conversations.DELETED))
        return [conversations.summary(row) for row in rows]

    def probe(self) -> None:
        """Read from the tables; raise Unavailable if the database does not answer."""
        self._query("SELECT 1 FROM chat_rooms LIMIT 1", ())

    def _query(self, statement: str, args: tuple) -> list[tuple]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        with self.reach():
            rows, conn = self.run(self._execute, conn, self.sql(statement), args)
        with self._lock:
            if len(self._idle) < READERS:
                self._idle.append(conn)
                return rows
        self.run(conn.close)
        return rows

    def _execute(self, conn: Any, statement: str, args: tuple) -> tuple[list[tuple], Any]:
        """Run a read on conn (a new connection if None) and return its rows and the connection; close it on failure."""
        if conn is None:
            conn = self.connect(write=False)
        try:
            cursor = conn.cursor()
            cursor.execute(statement, args)
            return cursor.fetchall(), conn
        except BaseException:
            conn.close()
            raise

    @contextmanager
    def reach(self) -> Iterator[None]:
        """Turn the driver's errors into Unavailable."""
        try:
            yield
        except self.errors as exc:
            raise Unavailable(f"the message store is unavailable: {exc}") from exc


def _fold(row: Revision) -> tuple:
    """Return FOLD's arguments: the message's row as its state tells it, and the change's id."""
    state = json.loads(row.state)
    reply_to = state.get("reply_to")
    return (row.room, row.target, state["ts"], state["name"], state.get("user"),
            None if reply_to is None else int(reply_to), row.state, row.id)
