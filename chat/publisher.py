"""Publishing from outside a client: the checks every API applies, and a Publisher for other processes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import backends, config, protocol

#: The name a message published through an API goes out under when none is given.
DEFAULT_NAME = "system"


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


class Publisher:
    """Post into the rooms of chat servers that share a Redis, from a process that serves no clients.

    ``Publisher(redis_url).publish("ops", "Deploy finished", name="ci")``.
    Settings come from settings, then the process's ``CHAT_*`` variables:
    give it the same ``CHAT_HISTORY_SIZE`` and ``CHAT_ROOM_EXPIRY`` as the servers.
    """

    def __init__(self, url: str, settings: Mapping[str, Any] | None = None) -> None:
        if url.startswith("memory://"):
            raise config.ConfigError("Publisher needs the servers' Redis URL: memory:// lives in one process")
        self.settings = config.load(os.environ, {**(settings or {}), "BACKEND_URL": url})
        self._backend = backends.create(url, self.settings)

    def publish(self, room: str, text: str, name: str | None = None, user: str | None = None) -> str:
        """Send text to room as name (default "system") and return the message's id."""
        return str(self._backend.publish(*check(self.settings, room, text, name, user)))

    def close(self) -> None:
        """Disconnect from Redis."""
        self._backend.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
