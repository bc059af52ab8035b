"""Retention: remove what CHAT_RETENTION no longer keeps, a chunk per transaction, on the writer thread.

Each chunk removes messages older than the age, then those past a room's
count, with the claims of what it removed; it raises each room's floor past
what went (so a client resuming from before it is told of a gap) and drops
the rooms left empty.  The writer runs its ``Pruner`` between batches, so a
big clean-up never holds up the writes for more than one chunk.
"""

from __future__ import annotations

import time
from typing import Any

from .records import Retention
from .sql import Database

#: Rooms over their count looked at per chunk.
ROOMS_PER_CHUNK = 10
#: Messages removed per transaction.
CHUNK = 1000


class Pruner:
    """Say when retention is due, and run it a chunk at a time (again at once while chunks come back full)."""

    def __init__(self, retention: Retention, every: float) -> None:
        self.retention = retention
        self.every = every
        self._due = time.monotonic()

    def wait(self) -> float | None:
        """Return the seconds until the next chunk is due, or None when nothing is ever removed."""
        return None if self.retention.forever else self._due - time.monotonic()

    def run(self, database: Database) -> None:
        """Remove one chunk if due; raise Unavailable (and try again after every) if the database fails."""
        now = time.monotonic()
        if self.retention.forever or now < self._due:
            return
        self._due = now + self.every
        if prune(database, self.retention, time.time_ns() // 1_000_000, CHUNK) >= CHUNK:
            self._due = now


def prune(database: Database, retention: Retention, now_ms: int, chunk: int) -> int:
    """Remove up to chunk messages that retention no longer keeps, in one transaction; return how many."""
    sql = database.sql

    def work(conn: Any) -> int:
        cursor = conn.cursor()
        gone: list[tuple[str, int]] = []
        if retention.age is not None:
            cutoff = now_ms - int(retention.age * 1000)
            cursor.execute(sql(
                "DELETE FROM chat_messages WHERE (room, id) IN (SELECT room, id FROM chat_messages WHERE ts < ?"
                " ORDER BY ts LIMIT ?) RETURNING room, id"), (cutoff, chunk))
            gone.extend(cursor.fetchall())
            cursor.execute(sql("DELETE FROM chat_claims WHERE at < ?"), (cutoff / 1000,))
        if retention.count is not None and len(gone) < chunk:
            gone.extend(_over_count(sql, cursor, retention.count, chunk - len(gone)))
        _forget(sql, cursor, gone)
        return len(gone)

    with database.reach():
        return database.transaction(work)


def _over_count(sql: Any, cursor: Any, keep: int, chunk: int) -> list[tuple[str, int]]:
    """Remove the oldest messages of the rooms holding more than keep."""
    cursor.execute(sql("SELECT room FROM chat_rooms WHERE count > ? ORDER BY room LIMIT ?"), (keep, ROOMS_PER_CHUNK))
    gone: list[tuple[str, int]] = []
    for (room,) in cursor.fetchall():
        cursor.execute(sql("SELECT id FROM chat_messages WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?"),
                       (room, keep))
        cut = cursor.fetchone()
        if cut is None:
            # The count ran ahead (a row stored twice counts twice): set it right.
            cursor.execute(sql(
                "UPDATE chat_rooms SET count = (SELECT count(*) FROM chat_messages WHERE room = ?) WHERE room = ?"),
                (room, room))
            continue
        cursor.execute(sql(
            "DELETE FROM chat_messages WHERE (room, id) IN (SELECT room, id FROM chat_messages WHERE room = ?"
            " AND id <= ? ORDER BY id LIMIT ?) RETURNING room, id"), (room, cut[0], chunk - len(gone)))
        gone.extend(cursor.fetchall())
        if len(gone) >= chunk:
            break
    return gone


def _forget(sql: Any, cursor: Any, gone: list[tuple[str, int]]) -> None:
    """Raise each room's floor past what was removed, and drop the rooms left with no message."""
    rooms: dict[str, list[int]] = {}
    for room, message_id in gone:
        entry = rooms.setdefault(room, [message_id, 0])
        entry[0] = max(entry[0], message_id)
        entry[1] += 1
    for room, (top, count) in sorted(rooms.items()):
        cursor.execute(sql("DELETE FROM chat_claims WHERE room = ? AND id <= ?"), (room, top))
        # A room's changes go with its messages: those before the floor, and those to a message removed.
        cursor.execute(sql("DELETE FROM chat_changes WHERE room = ? AND (id <= ? OR target <= ?)"), (room, top, top))
        cursor.execute(sql(
            "UPDATE chat_rooms SET floor = CASE WHEN floor < ? THEN ? ELSE floor END, count = count - ?"
            " WHERE room = ?"),
            (top, top, count, room))
        cursor.execute(sql("SELECT 1 FROM chat_messages WHERE room = ? LIMIT 1"), (room,))
        if cursor.fetchone() is None:
            cursor.execute(sql("DELETE FROM chat_rooms WHERE room = ?"), (room,))
            cursor.execute(sql("DELETE FROM chat_claims WHERE room = ?"), (room,))
            cursor.execute(sql("DELETE FROM chat_changes WHERE room = ?"), (room,))
