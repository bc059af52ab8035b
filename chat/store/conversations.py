"""Conversations in the store: rooms' kind and members, bans, mutes, and each user's read position.

``chat_conversations`` holds each private room (``dm`` is its two users,
sorted and joined by a newline, for a DM); ``chat_members`` one row per
(room, kind, user) where kind is ``member``, ``ban`` or ``mute``;
``chat_reads`` one row per (user, room) the user has joined or read, with
the id read up to (0: nothing yet).  A user's rooms come from the two
indexes on user_id; an unread count is a range of ``chat_messages``'
primary key (room, id) past the read position, never a scan of the room.
Writes go through the store's writer (``Changes``), in its batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from .records import Stored

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS chat_conversations (room TEXT PRIMARY KEY, private INTEGER NOT NULL, dm TEXT)",
    "CREATE TABLE IF NOT EXISTS chat_members (room TEXT NOT NULL, kind TEXT NOT NULL, user_id TEXT NOT NULL,"
    " PRIMARY KEY (room, kind, user_id))",
    "CREATE INDEX IF NOT EXISTS chat_members_user ON chat_members (user_id, kind)",
    "CREATE TABLE IF NOT EXISTS chat_reads (user_id TEXT NOT NULL, room TEXT NOT NULL, id BIGINT NOT NULL,"
    " PRIMARY KEY (user_id, room))",
)
KINDS = ("member", "ban", "mute")

READ = (
    "INSERT INTO chat_reads (user_id, room, id) VALUES (?, ?, ?) ON CONFLICT (user_id, room) DO UPDATE SET"
    " id = CASE WHEN excluded.id > chat_reads.id THEN excluded.id ELSE chat_reads.id END"
)
PUT_ROOM = (
    "INSERT INTO chat_conversations (room, private, dm) VALUES (?, ?, ?) ON CONFLICT (room) DO UPDATE SET"
    " private = excluded.private, dm = coalesce(chat_conversations.dm, excluded.dm)"
)
ADD = "INSERT INTO chat_members (room, kind, user_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
REMOVE = "DELETE FROM chat_members WHERE room = ? AND kind = ? AND user_id = ?"
CLEAR_MEMBERS = "DELETE FROM chat_members WHERE room = ? AND kind = 'member'"
#: What a message's folded state holds once deleted (a text cannot hold it: its quotes are escaped), as the
#: LIKE pattern the reads below take as their last argument (a literal % would be a placeholder to psycopg).
DELETED = '%"deleted":true%'
#: Others' messages in a room past a read position, deleted ones left out: a range of the primary key.
UNREAD = ("SELECT count(*) FROM chat_messages WHERE room = ? AND id > ? AND (user_id IS NULL OR user_id <> ?)"
          " AND (state IS NULL OR state NOT LIKE ?)")
#: A user's rooms, each with its read position (0: none), as seats: member rows and read rows, one per room.
ROOMS_OF = (
    "WITH mine AS (SELECT room, max(id) AS id FROM ("
    "SELECT room, 0 AS id FROM chat_members WHERE user_id = ? AND kind = 'member'"
    " UNION ALL SELECT room, id FROM chat_reads WHERE user_id = ?) AS seats GROUP BY room)"
    " SELECT mine.room, coalesce(c.private, 0), c.dm, mine.id, t.top,"
    " (SELECT count(*) FROM chat_messages m WHERE m.room = mine.room AND m.id > mine.id"
    " AND (m.user_id IS NULL OR m.user_id <> ?)"
    " AND (m.state IS NULL OR m.state NOT LIKE ?)),"
    " l.ts, l.name, l.body, l.user_id, l.reply_to, l.state"
    " FROM mine LEFT JOIN chat_conversations c ON c.room = mine.room"
    " LEFT JOIN chat_rooms t ON t.room = mine.room"
    " LEFT JOIN chat_messages l ON l.room = mine.room AND l.id = t.top"
    " ORDER BY coalesce(t.top, 0) DESC, mine.room"
)

Statement = tuple[str, tuple]


class Access(NamedTuple):
    """Who may do what in a room: whether it is private, its DM pair, and its members, bans and mutes."""

    private: bool = False
    dm: tuple[str, str] | None = None
    members: frozenset[str] = frozenset()
    bans: frozenset[str] = frozenset()
    mutes: frozenset[str] = frozenset()


class Summary(NamedTuple):
    """One of a user's rooms: its kind, the user's read position, its newest id and message, the unread count."""

    room: str
    private: bool
    dm: tuple[str, str] | None
    read: int
    top: int | None
    unread: int
    last: Stored | None


class Changes:
    """What the writer's next transaction writes of conversations: read positions, and statements waited for."""

    __slots__ = ("reads", "statements", "calls")

    def __init__(self) -> None:
        #: (user, room) -> the furthest id read, coalesced: a user reading fast costs one row per batch.
        self.reads: dict[tuple[str, str], int] = {}
        self.statements: list[Statement] = []
        #: Reads queued, counted as appended messages are, so that flush() waits for them too.
        self.calls = 0

    def __bool__(self) -> bool:
        return bool(self.reads or self.statements)

    def read(self, room: str, user: str, message_id: int) -> None:
        """Queue moving user's read position in room forward to message_id."""
        key = (user, room)
        if message_id >= self.reads.get(key, -1):
            self.reads[key] = message_id
        self.calls += 1

    def keep(self, failed: Changes) -> None:
        """Take back a failed transaction's reads (its statements' waiters were told it failed)."""
        for key, message_id in failed.reads.items():
            if message_id > self.reads.get(key, -1):
                self.reads[key] = message_id
        self.calls += failed.calls

    def write(self, cursor: Any, sql: Callable[[str], str]) -> None:
        """Run the queued writes on cursor, inside the writer's transaction."""
        if self.reads:
            cursor.executemany(sql(READ), [(user, room, at) for (user, room), at in sorted(self.reads.items())])
        for statement, args in self.statements:
            cursor.execute(sql(statement), args)


def put_room(room: str, private: bool, members: list[str] | None, dm: tuple[str, str] | None = None) -> list[Statement]:
    """Return the statements that create or update room (replacing its members when a list is given)."""
    statements: list[Statement] = [(PUT_ROOM, (room, int(private), None if dm is None else "\n".join(dm)))]
    if members is not None:
        statements.append((CLEAR_MEMBERS, (room,)))
        statements.extend((ADD, (room, "member", user)) for user in members)
    return statements


def access(rows: list[tuple], members: list[tuple]) -> Access:
    """Build a room's Access from its conversation row (if any) and its chat_members rows (kind, user)."""
    private, dm = (bool(rows[0][0]), rows[0][1]) if rows else (False, None)
    by_kind: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for kind, user in members:
        by_kind.setdefault(kind, set()).add(user)
    pair = tuple(dm.split("\n", 1)) if dm else None
    return Access(private, pair if pair is None or len(pair) == 2 else None,  # type: ignore[arg-type]
                  frozenset(by_kind["member"]), frozenset(by_kind["ban"]), frozenset(by_kind["mute"]))


def summary(row: tuple) -> Summary:
    """Build a Summary from a ROOMS_OF row."""
    room, private, dm, read, top, unread, ts, name, body, user, reply_to, state = row
    last = None if ts is None else Stored(room, int(top), int(ts), name, body, user, None, reply_to, state)
    pair = tuple(dm.split("\n", 1)) if dm else None
    return Summary(room, bool(private), pair, int(read), None if top is None else int(top), int(unread), last)  # type: ignore[arg-type]
