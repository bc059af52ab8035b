"""The names of a room's keys and channel; the braces put all of them in one cluster slot."""

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


def presence(room: str) -> list[str]:
    """Return room's presence keys: on (pid/member -> key and name), alive (pid -> deadline), online, names."""
    start = prefix(room)
    return [start + "on", start + "alive", start + "online", start + "names"]
