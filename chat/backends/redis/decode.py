"""What the Redis backend reads, decoded: stream ids, live entries, replays and items."""

from __future__ import annotations

from typing import Any

from ... import protocol
from .. import Item, Presence, Replay, fold, resume
from . import changes

StreamId = tuple[int, int]
#: One entry from a room's channel: the id of the entry before it, its id, its fields.
Live = tuple[StreamId, StreamId, dict[bytes, bytes]]


def sid(raw: bytes | str) -> StreamId:
    """Parse a stream id."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def live(body: dict[str, Any]) -> Live:
    """Return the id before, the id and the fields of one entry as the channel carries it."""
    prev, entry = sid(body.pop("p")), sid(body.pop("i"))
    return prev, entry, {key.encode(): str(value).encode() for key, value in body.items()}


def item(room: str, entry: StreamId, fields: dict[bytes, bytes]) -> Item | None:
    """Return the delivery a stream entry of room makes: a chat message, a change, or a presence event."""
    ms, seq = entry
    if seq:
        event, name, online = fields[b"e"].decode(), fields[b"n"].decode(), int(fields[b"o"])
        said = Presence(event, fields.get(b"m", b"").decode(), name, online)
        return Item(None, protocol.presence(event, room, name, online), said, entry)
    if b"k" in fields:
        return changes.item(room, entry, fields)
    if b"s" in fields:
        return Item(ms, changes.folded(fields[b"s"]), None, entry)
    user, reply_to = fields.get(b"u") or None, fields.get(b"r")
    payload = fold.message(
        ms, room, fields[b"n"].decode(), fields[b"x"].decode(), int(fields[b"ts"]), user and user.decode(),
        None if reply_to is None else int(reply_to),
    )
    return Item(ms, payload, None, entry)


def replay(room: str, since: int | None, reply: list[Any]) -> Replay:
    """Return what a client that last saw since is owed, from the reply of replay.lua."""
    if reply[0] is None:
        if since is None:
            return Replay()
        seconds, micros = reply[1]
        now = int(seconds) * 1_000_000 + int(micros) // 1000 * 1000
        return Replay() if since >= now else Replay(gap=True, missed=None)
    last, epoch, first, entries = int(reply[0]), int(reply[1]), reply[2], reply[3]
    messages = []
    for raw, fields in entries:
        entry = sid(raw)
        if entry[1] == 0:
            message = item(room, entry, dict(zip(fields[::2], fields[1::2], strict=True)))
            if message is not None:
                messages.append(message)
    messages = changes.folds(messages, reply[5], int(reply[4]), since)
    if since is None:
        return Replay(messages, last=last, changed=int(reply[6]))
    if first:
        ms, seq = sid(first[0][0])
        oldest = ms + (1 if seq else 0)
    else:
        oldest = last + 1
    found = resume(messages, since, last, epoch, oldest)
    found.changed = int(reply[6])
    return found
