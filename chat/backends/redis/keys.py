"""The names of a room's keys and channel; the braces put all of them in one cluster slot."""

from __future__ import annotations


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


def presence(room: str, pid: str) -> list[str]:
    """Return the presence keys of room as seen by process pid: pids, online, names, on:<pid>, alive:<pid>."""
    start = prefix(room)
    return [start + "pids", start + "online", start + "names", start + "on:" + pid, start + "alive:" + pid]
