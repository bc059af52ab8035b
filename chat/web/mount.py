"""The chat as mounted on one app: its settings, hub and metrics, and the operations its APIs share."""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable
from typing import Any

from flask import current_app

from .. import protocol
from ..metrics import Metrics
from ..rooms import changes, publisher
from ..rooms.hub import Hub
from ..rooms.receipts import Receipts
from ..store import history
from . import identity

#: Most messages one page of history holds.
PAGE_LIMIT = 200


class Mount:
    """Hold one app's chat, and publish, read and sign out through it."""

    def __init__(
        self, settings: dict[str, Any], hub: Hub, metrics: Metrics, identify: identity.Identify,
        identifies: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.metrics = metrics
        self.receipts = Receipts(ttl=settings["IDEMPOTENCY_TTL"])
        self._identify = identify
        self._identifies = identifies

    @property
    def native(self) -> bool:
        """Tell whether knowing who a client is needs nothing of Flask's request (no identify callback reads it)."""
        return not self._identifies()

    def identity(self, token: str | None = None) -> identity.Identity | None:
        """Return who the current request is, from token if given, else from the host's callback."""
        return identity.resolve(token, self._identify, self.settings)

    def publish(
        self, room: str, text: str, name: str | None = None, user: str | None = None, cid: str | None = None,
    ) -> dict[str, Any]:
        """Send text to room as name (and user), under cid's claim if given, store it, and return its id, room and ts.

        Raises ProtocolError for a bad room, name or text, and publisher.Reused for a cid claimed by another message.
        """
        room, sender, text, user = publisher.check(self.settings, room, text, name, user)
        return publisher.post(self.hub.backend, self.hub.store, room, sender, text, user, cid)

    def history(
        self, room: str, since: int | None = None, limit: int | None = None, before: int | None = None,
    ) -> dict[str, Any]:
        """Return a page of room's messages as state-2 objects: the last ones, those before before, or after since.

        ``more`` tells whether older messages (newer ones, with since) lie beyond the page, which holds at most
        CHAT_PAGE_BYTES of payloads (one message at least).
        """
        room = protocol.room(room)
        count = self.settings["HISTORY_REPLAY"] if limit is None else max(0, min(limit, PAGE_LIMIT))
        items, more, gap = history.page(
            self.hub.store, self.hub.backend, room, since, before, count, self.settings["HISTORY_SIZE"],
        )
        items, cut = history.fit(items, self.settings["PAGE_BYTES"], newest=since is None)
        more = more or cut
        body: dict[str, Any] = {"messages": [json.loads(item.payload) for item in items], "more": more}
        if gap is not None and gap.gap:
            body.update(gap=True, missed=gap.missed)
        return body

    def presence(self, room: str) -> dict[str, Any]:
        """Return who is online in room."""
        online, users = self.hub.backend.presence(protocol.room(room))
        return {"online": online, "users": users}

    # Conversations: private rooms, DMs, members, bans, mutes, read positions.

    def room(self, room: str) -> dict[str, Any]:
        """Return {"room", "private", "members", "online"} for room."""
        access = self.hub.conversations.membership.access(protocol.room(room))
        online = self.hub.backend.presence(room)[0]
        return {"room": room, "private": access.private, "members": sorted(access.members), "online": online}

    def put_room(self, room: str, private: bool, members: list[str] | None) -> dict[str, Any]:
        """Create or update room (its members replaced when given); return {"room", "private", "members"}."""
        access = self.hub.conversations.membership.put(room, private, members)
        return {"room": room, "private": access.private, "members": sorted(access.members)}

    def change(self, room: str, user: str, kind: str, on: bool) -> None:
        """Add user to room's members, bans or mutes (on), or take it out."""
        membership = self.hub.conversations.membership
        (membership.add if on else membership.remove)(room, user, kind)

    def dm(self, first: str, second: str) -> str:
        """Return the DM room of two users, creating it the first time."""
        return self.hub.conversations.membership.dm(first, second)

    def rooms_of(self, user: str) -> list[dict[str, Any]]:
        """Return user's rooms, newest activity first: {"room", "private", "dm", "unread", "last"} each."""
        user = protocol.user(user)
        rooms = []
        for summary in self.hub.store.rooms_of(user):
            other = None
            if summary.dm is not None:
                other = summary.dm[1] if summary.dm[0] == user else summary.dm[0]
            last = None if summary.last is None else json.loads(summary.last.item().payload)
            rooms.append({"room": summary.room, "private": summary.private, "dm": other, "unread": summary.unread,
                          "last": last})
        return rooms

    def mark_read(self, room: str, user: str, message_id: int | str, name: str | None = None) -> bool:
        """Move user's read position in room forward to message_id; False if it was there already.

        Raises ProtocolError for a bad room, user or id, and conversations.NotFound for an id not in room.
        """
        room, user, found = protocol.room(room), protocol.user(user), protocol.message_id(message_id)
        return self.hub.conversations.read(room, user, name or user, found)

    def change_message(
        self, room: str, message_id: Any, kind: str, text: Any = None, name: Any = None,
    ) -> dict[str, Any]:
        """Edit (kind "edit", with text) or delete a message as the API key's holder; return the change's id and ts.

        Raises ProtocolError for bad input, and Refused for a message not in the room (or deleted).
        """
        return changes.moderate(self.hub.backend, self.hub.store, self.settings, room, message_id, kind, text, name)

    def messages_of(self, user: str, before: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """Return a page of what user wrote in any room, newest first: {"messages", "more"}."""
        count = self.settings["HISTORY_REPLAY"] if limit is None else max(0, min(limit, PAGE_LIMIT))
        return changes.export(self.hub.store, user, before, count)

    def erase(self, user: str) -> int:
        """Delete every message user wrote, in every room; return how many were deleted."""
        return changes.erase(self.hub.backend, self.hub.store, user)

    def disconnect(self, user_id: str) -> int:
        """Close the connections of user_id with 1008 "signed out", in every process; return how many were here."""
        return self.hub.sign_out(user_id)


#: Every chat mounted in this process, so that gunicorn's hooks find them whatever
#: WSGI object (middleware, a dispatcher, a host app) is being served.
_mounts: weakref.WeakSet[Mount] = weakref.WeakSet()


def register(mount: Mount) -> None:
    """Record a mount so that instances() finds it."""
    _mounts.add(mount)


def instances() -> list[Mount]:
    """Return every chat mounted in this process."""
    return list(_mounts)


def state() -> Mount:
    """Return the chat of the current app."""
    return current_app.extensions["chat"]
