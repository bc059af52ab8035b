"""Publishing from outside a client: the checks and storing every API applies, and a Publisher for other processes."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from . import backends, config, protocol, store
from .backends import Backend, Unavailable
from .store import NoStore, Store, Stored

#: The name a message published through an API goes out under when none is given.
DEFAULT_NAME = "system"
#: Seconds a post waits for its message to be stored before answering.
STORE_WAIT = 10.0


class TooBig(protocol.ProtocolError):
    """A message longer than CHAT_MAX_MESSAGE_BYTES."""


def check(settings: Mapping[str, Any], room: Any, text: Any, name: Any = None, user: Any = None) -> tuple:
    """Return (room, name, text, user) as a backend publishes them, or raise ProtocolError (TooBig)."""
    room = protocol.room(room)
    if not isinstance(text, str) or protocol.is_blank(text):
        raise protocol.ProtocolError("message must be a non-empty string")
    limit = settings["MAX_MESSAGE_BYTES"]
    if len(text.encode()) > limit:
        raise TooBig(f"message over {limit} bytes")
    if name is not None and not isinstance(name, str):
        raise protocol.ProtocolError("name must be a string")
    if user is not None and (not isinstance(user, str) or not user):
        raise protocol.ProtocolError("user must be a non-empty string")
    sender = protocol.name(name) if name is not None and name.strip() else DEFAULT_NAME
    return room, sender, text, user


def post(
    backend: Backend, record: Store | NoStore, room: str, name: str, text: str, user: str | None = None,
    cid: str | None = None,
) -> dict[str, Any]:
    """Publish a checked message, wait until record stored it (under cid if given); return {"id", "room", "ts"}."""
    record.ready()
    message_id, ts = backend.publish(room, name, text, user)
    stored = threading.Event()
    record.append(Stored(room, message_id, ts, name, text, user, cid), lambda _: stored.set())
    if not stored.wait(STORE_WAIT):
        raise Unavailable("the message store did not answer in time", maybe_done=True)
    return {"id": str(message_id), "room": room, "ts": ts}


class Publisher:
    """Post into the rooms of chat servers that share a Redis and a store, from a process that serves no clients.

    ``Publisher(redis_url).publish("ops", "Deploy finished", name="ci")``.
    Settings come from settings, then the process's ``CHAT_*`` variables:
    give it the same ``CHAT_HISTORY_SIZE``, ``CHAT_ROOM_EXPIRY`` and
    ``CHAT_STORE_URL`` (or ``DATABASE_URL``) as the servers.  Each message is
    stored as the servers store theirs, so it stays in the history and the
    pages after a restart.  With the default store (a SQLite file in the
    instance folder), give instance_path when the servers' app is not the
    standalone one (``app.instance_path``).
    """

    def __init__(self, url: str, settings: Mapping[str, Any] | None = None, instance_path: str | None = None) -> None:
        if url.startswith("memory://"):
            raise config.ConfigError("Publisher needs the servers' Redis URL: memory:// lives in one process")
        self.settings = config.load(os.environ, {**(settings or {}), "BACKEND_URL": url})
        self._backend = backends.create(url, self.settings)
        self._store = store.create(self.settings["STORE_URL"], self.settings, instance_path or _standalone_instance())

    def publish(self, room: str, text: str, name: str | None = None, user: str | None = None) -> str:
        """Send text to room as name (default "system"), wait until it is stored, and return the message's id."""
        return post(self._backend, self._store, *check(self.settings, room, text, name, user))["id"]

    def close(self) -> None:
        """Store what is queued, and disconnect from Redis and the store."""
        self._store.close()
        self._backend.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _standalone_instance() -> str:
    """Return the instance folder of create_app's app, which holds the default store."""
    from flask import Flask

    return Flask(__package__).instance_path
