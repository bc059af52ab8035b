"""The chat as mounted on one app: its settings, hub and metrics, and the operations its APIs share."""

from __future__ import annotations

import json
import time
import weakref
from typing import Any

from flask import current_app

from . import identity, protocol, publisher
from .hub import Hub
from .metrics import Metrics
from .receipts import Receipts


class Mount:
    """Hold one app's chat, and publish, read and sign out through it."""

    def __init__(self, settings: dict[str, Any], hub: Hub, metrics: Metrics, identify: identity.Identify) -> None:
        self.settings = settings
        self.hub = hub
        self.metrics = metrics
        self.receipts = Receipts(ttl=settings["IDEMPOTENCY_TTL"])
        self._identify = identify

    def identity(self, token: str | None = None) -> identity.Identity | None:
        """Return who the current request is, from token if given, else from the host's callback."""
        return identity.resolve(token, self._identify, self.settings["JWT_SECRET"])

    def publish(self, room: str, text: str, name: str | None = None, user: str | None = None) -> dict[str, Any]:
        """Send text to room as name (and user), and return its id, room and ts; raise ProtocolError if invalid."""
        room, sender, text, user = publisher.check(self.settings, room, text, name, user)
        backend = self.hub.backend
        message_id = backend.publish(room, sender, text, user)
        # The backend stamps the message; read it back so that the answer's ts is the frame's.
        for item in backend.replay(room, message_id - 1, 1).messages:
            if item.id == message_id:
                return {"id": str(message_id), "room": room, "ts": json.loads(item.payload)["ts"]}
        return {"id": str(message_id), "room": room, "ts": time.time_ns() // 1_000_000}

    def history(self, room: str, since: int | None = None, limit: int | None = None) -> dict[str, Any]:
        """Return the messages of room after since (or the last ones), as the objects of state-2 frames."""
        room = protocol.room(room)
        count = self.settings["HISTORY_REPLAY"] if limit is None else max(0, min(limit, self.settings["HISTORY_SIZE"]))
        replay = self.hub.backend.replay(room, since, count)
        messages = [json.loads(item.payload) for item in replay.messages[:count]]
        body: dict[str, Any] = {"messages": messages}
        if replay.gap:
            body.update(gap=True, missed=replay.missed)
        return body

    def presence(self, room: str) -> dict[str, Any]:
        """Return who is online in room."""
        online, users = self.hub.backend.presence(protocol.room(room))
        return {"online": online, "users": users}

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
