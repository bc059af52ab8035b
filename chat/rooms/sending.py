"""One chat message from a client on its way: moderation, then publisher.send, and the sender's answer.

The hub's ``publish`` hands every message from a client here.  A message
with a v2 client id is claimed in the store first (``publisher.send``), so
that a resend (after a cut, on another worker, after a restart) is answered
with the first one's id instead of being sent again; a new one is acked once
the store has committed it.  Everything is stored after the backend gave it
its id and fanned it out, so the fast path never waits for the store.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from .. import protocol
from ..backends import Backend, Unavailable, fold
from ..socket.connection import Connection
from ..store import NoStore, Store
from . import changes, publisher

if TYPE_CHECKING:
    from ..metrics import Metrics

#: Look at a message before it is stored: return the text to send, or None to drop it.
Moderate = Callable[[Connection, str], str | None]


class Sender:
    """Publish connections' messages through the backend and record them in the store."""

    def __init__(self, backend: Backend, store: Store | NoStore, stats: Metrics, moderate: Moderate | None) -> None:
        self._backend = backend
        self._store = store
        self._stats = stats
        self._moderate = moderate

    def send(self, conn: Connection, text: str, cid: str | None = None, reply_to: int | None = None) -> None:
        """Send text from conn to its room once moderation lets it through, and store it (acking a cid once stored).

        A reply to a message that is not in the room, or is deleted, is not sent.
        """
        self._stats.received(len(text))
        if reply_to is not None:
            try:
                target = changes.state(self._backend, self._store, conn.room, reply_to)
            except Unavailable as exc:
                conn.send(protocol.notice("unavailable", exc.notice, cid))
                return
            if target is None or fold.state_of(target).get("deleted"):
                conn.send(protocol.notice("not_found", changes.REFUSALS["not_found"], cid))
                return
        vet = None if self._moderate is None else partial(self._moderate, conn)
        on_stored = None if cid is None else lambda stored: conn.send(protocol.ack(cid, stored.id))
        try:
            # A client id is its sender's: another sender's same id is another message.
            claim = None if cid is None else f"{conn.scope} {cid}"
            posted = publisher.send(
                self._backend, self._store, conn.room, conn.name, text, conn.user, claim, vet, on_stored, reply_to,
            )
        except Unavailable as exc:
            conn.send(protocol.notice("unavailable", exc.notice, cid))
            return
        if posted is None:
            conn.send(protocol.notice("rejected", "your message was not accepted", cid))
        elif cid is not None and posted.ts is None:
            conn.send(protocol.ack(cid, posted.id))
