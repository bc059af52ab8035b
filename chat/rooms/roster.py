"""Who is in each room of this process: the connections, and the names signed-in users hold there.

The roster's lock guards both, and whether the process still takes joins;
no I/O happens under it.  A guest may not join under a signed-in member's
name: the roster counts those names per room, so that a join looks its
name up once instead of comparing it with every member.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..text import name_key

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..socket.connection import Connection

#: Why add() refused a connection.
CLOSING = "closing"
NAME_TAKEN = "name taken"


class Roster:
    """Own the connections of each room and the signed-in names among them."""

    def __init__(self, stats: Metrics) -> None:
        self.stats = stats
        self._lock = threading.Lock()
        self._rooms: dict[str, set[Connection]] = {}
        #: Per room, how many of its connections hold each signed-in name (by name_key).
        self._names: dict[str, dict[str, int]] = {}
        self._closing = False

    def add(self, conn: Connection) -> str | None:
        """Put conn in its room, or return why not (CLOSING, NAME_TAKEN)."""
        key = name_key(conn.name)
        with self._lock:
            if self._closing:
                return CLOSING
            names = self._names.get(conn.room)
            if conn.user is None and names is not None and key in names:
                return NAME_TAKEN
            members = self._rooms.setdefault(conn.room, set())
            members.add(conn)
            if conn.user is not None:
                names = self._names.setdefault(conn.room, {})
                names[key] = names.get(key, 0) + 1
            self.stats.room_resized(len(members) - 1, len(members))
        return None

    def remove(self, conn: Connection) -> None:
        """Take conn out of its room, if it is there."""
        with self._lock:
            members = self._rooms.get(conn.room)
            if members is None or conn not in members:
                return
            members.discard(conn)
            if not members:
                del self._rooms[conn.room]
            if conn.user is not None:
                self._forget_locked(conn.room, name_key(conn.name))
            self.stats.room_resized(len(members) + 1, len(members))

    def _forget_locked(self, room: str, key: str) -> None:
        names = self._names[room]
        if names[key] > 1:
            names[key] -= 1
            return
        del names[key]
        if not names:
            del self._names[room]

    def close(self) -> list[Connection]:
        """Take no more joins, and return every connection in the rooms."""
        with self._lock:
            self._closing = True
            return self._connections_locked()

    def members(self, room: str) -> list[Connection]:
        """Return a snapshot of the connections in room."""
        with self._lock:
            members = self._rooms.get(room)
            return list(members) if members else []

    def occupied(self, room: str) -> bool:
        """Tell whether any connection of this process is in room."""
        with self._lock:
            return bool(self._rooms.get(room))

    def connections(self) -> list[Connection]:
        """Return a snapshot of every connection in this process."""
        with self._lock:
            return self._connections_locked()

    def _connections_locked(self) -> list[Connection]:
        return [conn for members in self._rooms.values() for conn in members]
