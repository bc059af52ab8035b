"""Fan-out, history and presence, behind one small interface chosen by URL.

A backend assigns each chat message an id that is strictly increasing within
its room, keeps the room's recent history, counts who is online, and hands
every message and presence event to ``deliver`` in each process, in order.
The memory backend goes through the same publish -> deliver path as Redis, so
one process behaves like many.  Presence events are built with
``protocol.presence`` from the event, name and count, so every process
delivers the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol


class Item(NamedTuple):
    """One delivery: a chat message (with its id) or a presence event (id None), and its JSON payload."""

    id: int | None
    payload: bytes
    #: For a join event, the member id of who joined.
    joiner: str | None = None


Deliver = Callable[[str, list[Item]], None]


class Unavailable(RuntimeError):
    """The backend cannot take the request now; the caller may retry later."""

    def __init__(self, message: str, maybe_done: bool = False) -> None:
        super().__init__(message)
        #: The request may have reached the backend before its answer was lost.
        self.maybe_done = maybe_done

    @property
    def notice(self) -> str:
        """Return what to tell a sender whose message this was."""
        if self.maybe_done:
            return "the chat did not answer in time: your message may not have been sent"
        return "the chat is unavailable: your message was not sent"


@dataclass
class Replay:
    """What a joining client is owed: a gap (with its size, when known) and messages."""

    messages: list[Item] = field(default_factory=list)
    gap: bool = False
    missed: int | None = None
    #: The room's newest message id when the replay was read (a lower bound when it has none).
    last: int = 0


def resume(window: list[Item], since: int, last: int, epoch: int, oldest: int) -> Replay:
    """Decide what a client that last saw since is owed from a room's window of messages.

    window holds the room's messages still kept (at least those after since),
    last is the room's newest id, epoch the id its counter started from, and
    oldest the smallest id still kept (last + 1 when none is).
    """
    if since >= last:
        return Replay(last=last)
    newer = [item for item in window if item.id > since]
    if since < epoch:
        return Replay(newer, gap=True, missed=None, last=last)
    if since + 1 < oldest:
        return Replay(newer, gap=True, missed=oldest - since - 1, last=last)
    return Replay(newer, last=last)


class Backend(Protocol):
    """The operations every backend implements."""

    def start(self, deliver: Deliver) -> None:
        """Subscribe this process: call deliver(room, items) for every event, in order."""

    def publish(self, room: str, name: str, text: str, user: str | None = None) -> int:
        """Store a chat message (from an identified user, if given), fan it out, and return its id."""

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""

    def join(self, room: str, member: str, name: str) -> int:
        """Add a member to the room's presence, fan out its join event, and return the online count.

        Counting and fanning out are one atomic step, so the counts that
        clients see in join and leave events arrive in the order they changed.
        """

    def leave(self, room: str, member: str) -> int:
        """Remove a member from the room's presence, fan out its leave event, and return the count."""

    def users(self, room: str) -> list[str]:
        """Return the names of the members online in the room."""

    def watch(self, room: str) -> None:
        """Count one more local client in room.

        Called on every join, before replay(); when it returns, every message
        published later in that room will be delivered, even while another
        thread is still setting the room up.
        """

    def unwatch(self, room: str) -> None:
        """Count one local client fewer in room; stop reading it at zero."""

    def healthy(self) -> bool:
        """Tell whether the backend can take requests."""

    def close(self) -> None:
        """Stop delivering and release every resource."""


def create(url: str, settings: dict[str, Any]) -> Backend:
    """Return the backend for a CHAT_BACKEND_URL."""
    if url.startswith("memory://"):
        from .memory import MemoryBackend

        return MemoryBackend(settings)
    from .redis import RedisBackend

    return RedisBackend(url, settings)
