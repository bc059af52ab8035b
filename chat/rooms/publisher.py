"""Publishing: the checks every API applies, the claim, publish and store every message goes through, and a Publisher.

``send`` is the way of every message, from a client or an API: a client id
(a v2 cid, an Idempotency-Key) is claimed in the store first, so that a
resend is answered with the first one's id instead of being sent again;
the backend gives the message its id and ts and fans it out; the store then
records it.  ``post`` waits for the store; a client's message does not.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .. import backends, config, protocol, store
from ..backends import Backend, Unavailable
from ..store import NoStore, Store, Stored
from ..text import scalar

#: The name a message published through an API goes out under when none is given.
DEFAULT_NAME = "system"
#: Seconds a post waits for its message to be stored before answering.
STORE_WAIT = 10.0

#: Look at a message's text before it is sent: return the text to send, or None to drop the message.
Vet = Callable[[str], str | None]


class Posted(NamedTuple):
    """A message sent: its id and its frame's ts; or, when its client id was claimed before, the first one's id."""

    id: int
    #: None when the message was not sent again, its client id being known.
    ts: int | None


class Reused(Exception):
    """A client id posted again with another message than the first."""


class TooBig(protocol.ProtocolError):
    """A message longer than CHAT_MAX_MESSAGE_BYTES."""


def checked_text(settings: Mapping[str, Any], text: Any) -> str:
    """Return a message's (or an edit's) text, or raise ProtocolError (TooBig) for what no message may be."""
    if not isinstance(text, str) or protocol.is_blank(text):
        raise protocol.ProtocolError("message must be a non-empty string")
    if not scalar(text):
        raise protocol.ProtocolError("message must be valid Unicode text")
    limit = settings["MAX_MESSAGE_BYTES"]
    if len(text.encode()) > limit:
        raise TooBig(f"message over {limit} bytes")
    return text


def check(settings: Mapping[str, Any], room: Any, text: Any, name: Any = None, user: Any = None) -> tuple:
    """Return (room, name, text, user) as a backend publishes them, or raise ProtocolError (TooBig)."""
    room = protocol.room(room)
    text = checked_text(settings, text)
    if name is not None and not isinstance(name, str):
        raise protocol.ProtocolError("name must be a string")
    if user is not None and (not isinstance(user, str) or not user or not scalar(user)):
        raise protocol.ProtocolError("user must be a non-empty string of Unicode text")
    sender = protocol.name(name) if name is not None and name.strip() else DEFAULT_NAME
    return room, sender, text, user


def send(
    backend: Backend, record: Store | NoStore, room: str, name: str, text: str, user: str | None = None,
    cid: str | None = None, vet: Vet | None = None, on_stored: Callable[[Stored], None] | None = None,
    reply_to: int | None = None,
) -> Posted | None:
    """Publish a checked message under cid's claim (if given) and queue it for record; on_stored runs once stored.

    A cid claimed before sends nothing: the answer is the id it went out
    under.  vet may change the text, or drop the message (the answer is
    None).  The claim is given back when the message was not sent (dropped,
    vet raised, the backend refused it), and kept when the publish may have
    gone through (it timed out, or was interrupted), so that a resend waits
    until the claim goes stale instead of sending the message twice.
    """
    record.ready()
    if cid is not None:
        known = record.claim(room, cid)
        if known is not None:
            return Posted(known, None)
    try:
        vetted = text if vet is None else vet(text)
    except BaseException:
        _release(record, room, cid)
        raise
    if vetted is None:
        _release(record, room, cid)
        return None
    try:
        sent = backend.publish(room, name, vetted, user) if reply_to is None else backend.publish(
            room, name, vetted, user, reply_to)
    except Unavailable as exc:
        if not exc.maybe_done:
            _release(record, room, cid)
        raise
    record.append(Stored(room, sent.id, sent.ts, name, vetted, user, cid, reply_to), on_stored)
    return Posted(sent.id, sent.ts)


def _release(record: Store | NoStore, room: str, cid: str | None) -> None:
    if cid is not None:
        record.release(room, cid)


def post(
    backend: Backend, record: Store | NoStore, room: str, name: str, text: str, user: str | None = None,
    cid: str | None = None,
) -> dict[str, Any]:
    """Send a checked message (under cid, if given), wait until record stored it, and return {"id", "room", "ts"}.

    A cid claimed before is answered as the first post was (ts None when
    the store no longer holds it); Reused is raised when that was another
    message.
    """
    stored = threading.Event()
    posted = send(backend, record, room, name, text, user, cid, on_stored=lambda _: stored.set())
    assert posted is not None, "send drops a message only when told to vet it"
    if posted.ts is None:
        return _first(record, room, posted.id, (name, text, user))
    if not stored.wait(STORE_WAIT):
        raise Unavailable("the message store did not answer in time", maybe_done=True)
    return {"id": str(posted.id), "room": room, "ts": posted.ts}


def _first(record: Store | NoStore, room: str, known: int, asked: tuple[str, str, str | None]) -> dict[str, Any]:
    """Answer a post whose client id went out before as message known; raise Reused if that was another message."""
    found = [row for row in record.oldest(room, 1, after=known - 1) if row.id == known]
    if found and _as_stored(found[0].name, found[0].text, found[0].user) != _as_stored(*asked):
        raise Reused("this client id was sent before with another message")
    return {"id": str(known), "room": room, "ts": found[0].ts if found else None}


def _as_stored(*fields: str | None) -> tuple:
    """Return fields as every store gives them back (PostgreSQL keeps NUL as U+FFFD)."""
    return tuple(field and field.replace("\0", "\ufffd") for field in fields)


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
