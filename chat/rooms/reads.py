"""Read positions: how far each user has read each room, moving forward only, written in the store's batches.

Each process keeps the positions it has looked at or been told of; a move
is queued for the store writer's next batch (never a write of its own) and
told to every process as a receipt, which moves their copies too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..backends import Backend
from ..store import NoStore, Store

#: Positions a process keeps.
KEPT = 100_000


class Reads:
    """Keep, move and count users' read positions."""

    def __init__(self, store: Store | NoStore, backend: Backend) -> None:
        self.store = store
        self.backend = backend
        self._lock = threading.Lock()
        self._kept: OrderedDict[tuple[str, str], int] = OrderedDict()

    def position(self, room: str, user: str) -> int | None:
        """Return the id user has read room up to, or None if the user never joined or read it."""
        key = (room, user)
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None:
            return kept
        stored = self.store.read_of(room, user)
        if stored is not None:
            self._keep(key, stored)
        return stored

    def move(self, room: str, user: str, message_id: int) -> bool:
        """Move user's position in room forward to message_id; return False if it was there or further already."""
        current = self.position(room, user)
        if current is not None and current >= message_id:
            return False
        if not self._keep((room, user), message_id):
            return False
        self.store.read(room, user, message_id)
        return True

    def told(self, room: str, user: str, message_id: int) -> None:
        """Move this process's copy of a position another process moved."""
        with self._lock:
            if (room, user) in self._kept:
                self._keep_locked((room, user), message_id)

    def unread(self, room: str, user: str, position: int | None) -> int:
        """Return how many of others' messages in room lie past position."""
        return self.store.unread(room, user, position or 0)

    def exists(self, room: str, message_id: int) -> bool:
        """Tell whether message_id is a message of room (in the store, or in the backend's window without one)."""
        if self.store.durable:
            return bool(self.store.newest(room, 1, message_id - 1, message_id + 1))
        replay = self.backend.replay(room, message_id - 1, 1)
        return bool(replay.messages) and replay.messages[0].id == message_id

    def _keep(self, key: tuple[str, str], message_id: int) -> bool:
        with self._lock:
            return self._keep_locked(key, message_id)

    def _keep_locked(self, key: tuple[str, str], message_id: int) -> bool:
        kept = self._kept.get(key)
        if kept is not None and kept >= message_id:
            return False
        self._kept[key] = message_id
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT:
            self._kept.popitem(last=False)
        return True
