"""The names of a room's keys and channel; the braces put all of them in one cluster slot.

Keys of a room R:

``chat:{R}:meta``
    Hash: ``seq``, the last chat id given out, ``epoch``, where ``seq``
    started, and ``tail``, the id of the stream's last entry.  The room's first
    message or presence event starts ``seq`` from Redis's clock in milliseconds
    times 1000 (or past the stream's last id), so ids keep growing when the
    keys expire or are lost, and a client that resumes with an older id is
    told that an unknown number of messages were missed.
``chat:{R}:log``
    Stream.  Chat message N has id ``N-0`` and the fields ``n`` (name), ``x``
    (text), ``ts`` and ``u`` (user id, or empty); a presence event made while
    the counter is N gets ``N-k`` (k >= 1) and the fields ``e`` (join or
    leave), ``m`` (member id), ``n`` and ``o`` (online count).  Publishing trims
    the stream to the last ``max(HISTORY_SIZE, RETAIN)`` chat messages.
``chat:{R}:live``
    Sharded pub/sub channel: each entry as the script appends it, with the id
    of the entry before it (``subscriber.py`` fills gaps from the stream); the
    chat messages of one group as one JSON array.
``chat:{R}:online``, ``:names``, ``:on``, ``:alive``
    Presence (``presence.py``): online counts connections per key (a user id,
    or a guest's member id), so a user in two tabs is one entry; names maps a
    key to its name; on maps ``<pid>/<member>`` to the member's key and name;
    alive holds each process's liveness deadline, which it renews.
"""

from __future__ import annotations

#: Plain pub/sub channel for what one process tells every other (sign-outs).
CONTROL = "chat:control"


def prefix(room: str) -> str:
    """Return what every key of room starts with."""
    return f"chat:{{{room}}}:"


def meta(room: str) -> str:
    """Hash: seq (the last chat id), epoch (where seq started) and tail (the stream's last entry id)."""
    return prefix(room) + "meta"


def log(room: str) -> str:
    """Stream: the room's history, chat messages and presence events, in order."""
    return prefix(room) + "log"


def channel(room: str) -> str:
    """Sharded pub/sub channel: every stream entry as it is added, with the id before it."""
    return prefix(room) + "live"


def states(room: str) -> str:
    """Return the key of room's states hash: each changed message as it stands, and its latest edit's id."""
    return prefix(room) + "states"


def changed(room: str) -> str:
    """Return the key of room's sorted set of changed messages, by the position of their last change."""
    return prefix(room) + "changed"


def folds(room: str) -> list[str]:
    """Return the keys that keep room's changed messages: every script that renews the stream renews them too."""
    return [states(room), changed(room)]


def presence(room: str) -> list[str]:
    """Return room's presence keys: on (pid/member -> key and name), alive (pid -> deadline), online, names."""
    start = prefix(room)
    return [start + "on", start + "alive", start + "online", start + "names"]


def once(key: str) -> str:
    """Return the key that marks key as seen (Backend.once)."""
    return f"chat:once:{key}"
