"""Who may be in a room: private rooms and their members, DMs, bans and mutes, kept in the store.

Each process keeps the rooms it has looked at (``Access``) until a control
message says one changed: every change is committed to the store first, then
told to every process (``tell``: this one at once, the others on the backend's
control channel), which forgets its copy and closes
the sockets of a member removed or banned.  A copy loaded while a change was
on its way is not kept (the room's generation moved), so no process keeps an
older state than the store's once the change is told; and a copy is read
again after ``FRESH`` seconds, so a control message lost with a broken
subscription does not leave a process wrong for long.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .. import protocol
from ..backends import Unavailable
from ..store import Access, NoStore, Store
from ..store import conversations as sql

#: Rooms whose access a process keeps, and for how many seconds.
KEPT, FRESH = 10_000, 30.0
UNAUTHENTICATED, FORBIDDEN = 4401, 4403


def dm_room(first: str, second: str) -> str:
    """Return the DM room of two users: the same name from either side, within the room-name rule."""
    pair = "\x00".join(sorted((first, second)))
    return "dm-" + hashlib.sha256(pair.encode()).hexdigest()[:24]


class Membership:
    """Answer who may join, send in and be told about a room; change it in the store and tell every process."""

    def __init__(self, store: Store | NoStore, tell: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self._tell = tell
        self._lock = threading.Lock()
        #: room -> its access and when it was read, least recently used first.
        self._kept: OrderedDict[str, tuple[Access, float]] = OrderedDict()
        #: Per room, how many changes this process was told of: a copy loaded across one is not kept.
        self._generations: dict[str, int] = {}

    def access(self, room: str) -> Access:
        """Return who may do what in room, from this process's copy or the store."""
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(room)
            if kept is not None and now - kept[1] < FRESH:
                self._kept.move_to_end(room)
                return kept[0]
            generation = self._generations.get(room, 0)
        try:
            loaded = self.store.access(room)
        except Unavailable:
            # An older copy beats refusing every join while the store is away; with none, the join waits (1013).
            if kept is None:
                raise
            return kept[0]
        with self._lock:
            if self._generations.get(room, 0) == generation:
                self._kept[room] = (loaded, now)
                self._kept.move_to_end(room)
                while len(self._kept) > KEPT:
                    old, _ = self._kept.popitem(last=False)
                    self._generations.pop(old, None)
        return loaded

    def refusal(self, room: str, user: str | None) -> tuple[int, str] | None:
        """Return the close code and reason that keep user (None: a guest) out of room, or None to let it in."""
        access = self.access(room)
        if user is not None and user in access.bans:
            return FORBIDDEN, "banned"
        if access.private and user is None:
            return UNAUTHENTICATED, "sign in to join a private room"
        if access.private and user not in access.members:
            return FORBIDDEN, "not a member"
        return None

    def muted(self, room: str, user: str | None) -> bool:
        """Tell whether user's messages in room are dropped."""
        return user is not None and user in self.access(room).mutes

    def forget(self, room: str) -> None:
        """Drop this process's copy of room's access, told that it changed."""
        with self._lock:
            self._kept.pop(room, None)
            self._generations[room] = self._generations.get(room, 0) + 1

    # Changes: committed to the store, then told to every process.

    def put(self, room: str, private: bool, members: Iterable[str] | None) -> Access:
        """Create or update room (replacing its members when given) and return its access."""
        room = protocol.room(room)
        listed = None if members is None else sorted({protocol.user(user) for user in members})
        before = self.store.access(room)
        if before.dm is not None and (not private or (listed is not None and sorted(before.dm) != listed)):
            raise protocol.ProtocolError("a DM stays private, with its two members")
        self.store.change(sql.put_room(room, private, listed))
        gone = before.members - set(listed) if listed is not None and private else set()
        self._told(room, [(user, "removed") for user in sorted(gone)])
        return self.access(room)

    def add(self, room: str, user: str, kind: str = "member") -> None:
        """Add user to room's members, bans or mutes; a ban closes its sockets in room."""
        room, user = protocol.room(room), protocol.user(user)
        if kind == "member" and self.access(room).dm is not None:
            raise protocol.ProtocolError("a DM has exactly its two members")
        self.store.change([(sql.ADD, (room, kind, user))])
        self._told(room, [(user, "banned")] if kind == "ban" else [])

    def remove(self, room: str, user: str, kind: str = "member") -> None:
        """Take user out of room's members, bans or mutes; a member taken out of a private room is closed."""
        room, user = protocol.room(room), protocol.user(user)
        access = self.access(room)
        if kind == "member" and access.dm is not None:
            raise protocol.ProtocolError("a DM has exactly its two members")
        self.store.change([(sql.REMOVE, (room, kind, user))])
        self._told(room, [(user, "removed")] if kind == "member" and access.private else [])

    def dm(self, first: str, second: str) -> str:
        """Return the DM room of two users, creating it in the store the first time."""
        first, second = protocol.user(first), protocol.user(second)
        if first == second:
            raise protocol.ProtocolError("a DM needs two different users")
        room = dm_room(first, second)
        pair = tuple(sorted((first, second)))
        if self.access(room).dm != pair:
            self.store.change(sql.put_room(room, True, list(pair), pair))  # type: ignore[arg-type]
            self._told(room, [])
        return room

    def _told(self, room: str, closes: list[tuple[str, str]]) -> None:
        """Tell every process (this one first) to forget room and close whom it names."""
        self._tell({"room": room, "close": closes})
