"""One chat message on its way: the v2 claim, moderation, the backend, the store, and the sender's ack.

The hub's ``publish`` hands every message from a client here.  A message
with a v2 client id is claimed in the store first, so that a resend (after
a cut, on another worker, after a restart) is answered with the first
one's id instead of being sent again; a new one is acked once the store
has committed it.  Everything is stored after the backend gave it its id
and fanned it out, so the fast path never waits for the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import protocol
from .backends import Backend, Unavailable
from .connection import Connection
from .store import NoStore, Store, Stored

if TYPE_CHECKING:
    from .metrics import Metrics

#: Look at a message before it is stored: return the text to send, or None to drop it.
Moderate = Callable[[Connection, str], str | None]


class Sender:
    """Publish connections' messages through the backend and record them in the store."""

    def __init__(self, backend: Backend, store: Store | NoStore, stats: Metrics, moderate: Moderate | None) -> None:
        self._backend = backend
        self._store = store
        self._stats = stats
        self._moderate = moderate

    def send(self, conn: Connection, text: str, cid: str | None = None) -> None:
        """Send text from conn to its room once moderation lets it through, and store it (acking a cid once stored)."""
        self._stats.received(len(text))
        room, store = conn.room, self._store
        claimed = False
        try:
            if cid is not None:
                known = store.claim(room, cid)
                if known is not None:
                    conn.send(protocol.ack(cid, known))
                    return
                claimed = True
            if self._moderate is not None:
                moderated = self._moderate(conn, text)
                if moderated is None:
                    if claimed:
                        store.release(room, cid)
                    conn.send(protocol.notice("rejected", "your message was not accepted", cid))
                    return
                text = moderated
            store.ready()
            message_id, ts = self._backend.publish(room, conn.name, text, conn.user)
        except Unavailable as exc:
            # A publish that may have gone through keeps its claim: a resend waits for it to go stale.
            if claimed and not exc.maybe_done:
                store.release(room, cid)
            conn.send(protocol.notice("unavailable", exc.notice, cid))
            return
        row = Stored(room, message_id, ts, conn.name, text, conn.user, cid)
        store.append(row, None if cid is None else lambda stored: conn.send(protocol.ack(cid, stored.id)))
