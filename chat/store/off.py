"""CHAT_STORE_URL=none: no record beyond the backend's history, and v2 client ids remembered in this process only."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from ..backends import Unavailable
from .conversations import Access, Statement, Summary
from .records import Revision, Stored

#: Client ids remembered, oldest forgotten first.
REMEMBERED = 100_000
#: Seconds a second connection waits for the first to send the same client id.
CLAIM_WAIT = 10.0


class NoStore:
    """Keep nothing: history is what the backend holds; a client id is known until this process stops."""

    #: Whether what is recorded here outlives this process and is shared with the others.
    durable = False

    def __init__(self) -> None:
        # Reentrant, so that notify() asks the lock whether it is held: with a plain Lock it tries to take it,
        # which under gevent yields to the hub while holding it.
        self._lock = threading.RLock()
        self._sent = threading.Condition(self._lock)
        #: (room, cid) -> the message id, or None while it is being sent.
        self._cids: OrderedDict[tuple[str, str], int | None] = OrderedDict()

    def start(self) -> None:
        """Open nothing."""

    def ready(self) -> None:
        """Take every message."""

    def append(self, row: Stored | Revision, on_stored: Callable | None = None) -> None:
        """Remember the message's client id, and call on_stored at once: there is nothing to wait for."""
        if isinstance(row, Stored) and row.cid is not None:
            with self._lock:
                self._cids[(row.room, row.cid)] = row.id
                self._sent.notify_all()
        if on_stored is not None:
            on_stored(row)

    def claim(self, room: str, cid: str) -> int | None:
        """Return None when cid is new in room, or the id it was sent under (waiting while it is being sent)."""
        key = (room, cid)
        with self._sent:
            if key not in self._cids:
                self._cids[key] = None
                while len(self._cids) > REMEMBERED:
                    self._cids.popitem(last=False)
                return None
            if not self._sent.wait_for(lambda: self._cids.get(key, 0) is not None, CLAIM_WAIT):
                raise Unavailable("the chat did not answer in time: your message may not have been sent", True)
            found = self._cids.get(key)
            if found is None:
                self._cids[key] = None
            return found

    def release(self, room: str, cid: str) -> None:
        """Forget a claim whose message was not sent."""
        with self._lock:
            if self._cids.get((room, cid), 0) is None:
                del self._cids[(room, cid)]
                self._sent.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Return at once: nothing is queued."""
        return True

    def newest(self, room: str, limit: int, after: int | None = None, before: int | None = None) -> list[Stored]:
        """Return nothing."""
        return []

    def oldest(self, room: str, limit: int, after: int, before: int | None = None) -> list[Stored]:
        """Return nothing."""
        return []

    def changes(self, room: str, after: int, before: int, limit: int) -> list[Revision]:
        """Return nothing."""
        return []

    def by_user(self, user: str, limit: int, before: int | None = None) -> list[Stored]:
        """Return nothing."""
        return []

    def count(self, room: str, after: int, before: int) -> int:
        """Return 0."""
        return 0

    def floor(self, room: str) -> int | None:
        """Return None: this store holds no room."""
        return None

    def read(self, room: str, user: str, message_id: int) -> None:
        """Keep nothing."""

    def change(self, statements: list[Statement]) -> None:
        """Refuse: private rooms, members, bans and mutes need a store."""
        raise Unavailable("private rooms, members, bans and mutes need a message store (CHAT_STORE_URL)")

    def access(self, room: str) -> Access:
        """Return an open room's access: there is no other kind without a store."""
        return Access()

    def read_of(self, room: str, user: str) -> int | None:
        """Return None: nothing is read."""
        return None

    def unread(self, room: str, user: str, after: int) -> int:
        """Return 0."""
        return 0

    def rooms_of(self, user: str) -> list[Summary]:
        """Return no room."""
        return []

    def healthy(self) -> bool:
        """Tell that nothing can fail."""
        return True

    def close(self) -> None:
        """Do nothing."""
