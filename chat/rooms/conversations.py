"""What protocol v3 adds to a room, as the hub sees it: who may join and send, the welcome's read state, the
client's read and typing frames, and the control messages every process is told of them.

The hub calls this; the state lives in ``membership`` (access), ``reads``
(positions), ``typing`` and ``offline``.  Events for v3 clients (receipts,
typing) go to each process through the backend's control channel and, there,
straight to the room's v3 connections: they are never stored or replayed.  A
process acts on what it tells at once (``tell``), not when the channel brings
it back, which it skips by its origin: the channel may not be subscribed yet.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..backends import Backend, Unavailable
from ..socket import wire
from ..socket.connection import Connection
from ..store import NoStore, Store
from .membership import FORBIDDEN, Membership
from .offline import Gone, Offline
from .reads import Reads
from .typing import Typing

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """A message id that is not a message of the room."""


class Conversations:
    """Admit, welcome and hear v3 clients, and act on what every process is told."""

    def __init__(
        self, backend: Backend, store: Store | NoStore, settings: dict[str, Any],
        members: Callable[[str], list[Connection]], gone: Gone | None = None,
        wanted: Callable[[], bool] = lambda: False,
    ) -> None:
        self.backend = backend
        self.origin = secrets.token_hex(8)
        self.membership = Membership(store, self.tell)
        self.reads = Reads(store, backend)
        self.typing = Typing()
        self.offline = Offline(backend, self.origin, settings["OFFLINE_GRACE"], gone or (lambda user: None), wanted)
        self._limit = settings["PRESENCE_LIST_LIMIT"]
        self._members = members

    # Joining and leaving.

    def refusal(self, conn: Connection) -> tuple[int, str] | None:
        """Return the close code and reason that keep conn out of its room, or None."""
        return self.membership.refusal(conn.room, conn.user)

    def welcome(self, conn: Connection, payload: bytes, last: int) -> bytes:
        """Record an identified user's join of an open room, and add v3's read state to its welcome."""
        user, room = conn.user, conn.room
        access = self.membership.access(room)
        position = None
        if user is not None:
            position = self.reads.position(room, user)
            if position is None and not access.private:
                # An open room joined for the first time counts from here: what came before is not unread.
                self.reads.move(room, user, last)
                position = last
        if conn.version < 3:
            return payload
        unread = 0 if user is None else self.reads.unread(room, user, position)
        other = None
        if access.dm is not None and user is not None:
            other = access.dm[1] if access.dm[0] == user else access.dm[0]
        return protocol.welcome_v3(payload, position, unread, access.private, other)

    def joined(self, conn: Connection) -> None:
        """Count an identified connection that joined, for the offline hook."""
        if conn.user is not None:
            self.offline.connected(conn.user)

    def left(self, conn: Connection) -> None:
        """Count an identified connection that left, for the offline hook."""
        if conn.user is not None:
            self.offline.disconnected(conn.user)

    def muted(self, conn: Connection) -> bool:
        """Tell whether conn's messages are dropped in its room."""
        return self.membership.muted(conn.room, conn.user)

    # A v3 client's frames.

    def act(self, conn: Connection, frame: protocol.Frame) -> None:
        """Answer a v3 client's read or typing frame (other types are not taken here)."""
        if frame.type not in ("read", "typing"):
            conn.send(protocol.notice("invalid", f"{frame.type} frames are not taken here", frame.cid))
            return
        if conn.user is None:
            conn.send(protocol.notice("forbidden", f"sign in to send {frame.type} frames", frame.cid))
            return
        try:
            if frame.type == "typing":
                if self.typing.allow(conn.room, conn.user):
                    self.tell({"typing": conn.room, "user": conn.user, "name": conn.name})
                return
            assert frame.id is not None
            self.read(conn.room, conn.user, conn.name, frame.id)
        except NotFound:
            conn.send(protocol.notice("not_found", "no such message in this room", frame.cid))
        except Unavailable as exc:
            conn.send(protocol.notice("unavailable", f"not recorded: {exc}", frame.cid))

    def read(self, room: str, user: str, name: str, message_id: int) -> bool:
        """Move user's read position in room to message_id, and tell every process; False if it did not move."""
        if not self.reads.exists(room, message_id):
            raise NotFound(message_id)
        if not self.reads.move(room, user, message_id):
            return False
        access = self.membership.access(room)
        count = len(access.members) if access.private else self.backend.presence(room)[0]
        self.tell({"read": room, "user": user, "name": name, "id": message_id, "receipt": count <= self._limit})
        return True

    # What every process is told.

    def tell(self, message: dict[str, Any]) -> None:
        """Act on message here, then tell every other process sharing the backend."""
        message = {**message, "origin": self.origin}
        self._act(message)
        self.backend.tell(message)

    def control(self, message: dict[str, Any]) -> None:
        """Act on a control message another process told (this process's own were acted on when told)."""
        if message.get("origin") != self.origin:
            self._act(message)

    def _act(self, message: dict[str, Any]) -> None:
        """Act on a control message: a room's access changed, a receipt, someone typing, a user's connections."""
        try:
            if isinstance(room := message.get("room"), str):
                self.membership.forget(room)
                for user, reason in message.get("close") or ():
                    for conn in self._members(room):
                        if conn.user == user:
                            conn.close(FORBIDDEN, reason)
            elif isinstance(room := message.get("typing"), str):
                payload = protocol.typing(room, message["user"], message["name"])
                self._tell_room(room, payload, skip=message["user"])
            elif isinstance(room := message.get("read"), str):
                self.reads.told(room, message["user"], int(message["id"]))
                if message.get("receipt"):
                    self._tell_room(room, protocol.read(room, message["user"], message["name"], int(message["id"])))
            else:
                self.offline.control(message)
        except (KeyError, TypeError, ValueError):
            log.warning("skipping a malformed control message: %.200r", message)

    def _tell_room(self, room: str, payload: bytes, skip: str | None = None) -> None:
        # Encoded once for the room; a client still joining misses it rather than get it before its welcome.
        frame = wire.text_frame(payload)
        for conn in self._members(room):
            if conn.version >= 3 and (skip is None or conn.user != skip):
                conn.send(payload, frame)

    def stop(self) -> None:
        """Stop the offline hook's thread."""
        self.offline.stop()
