"""Fan-out, history and presence, behind one small interface chosen by URL.

A backend assigns each chat message an id that is strictly increasing within
its room, keeps the room's recent history, counts who is online, and hands
every message and presence event to ``deliver`` in each process, in order.
A change to a message (an edit, a delete, a reaction: ``change``) is applied
to the message's state in one atomic step and takes the room's next id, so it
is delivered, replayed and resumed in the room's order like a message.
The memory backend goes through the same publish -> deliver path as Redis, so
one process behaves like many.  Presence events are built with
``protocol.presence`` from the event, name and count, so every process
delivers the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

Position = tuple[int, int]


class Presence(NamedTuple):
    """What a presence event says: who (member id and name) joined or left, and how many are online after."""

    event: str
    member: str
    name: str
    online: int


class Item(NamedTuple):
    """One delivery: a chat message or a change (with its id), or a presence event (id None), and its JSON payload."""

    id: int | None
    payload: bytes
    #: For a presence event, what it says.
    presence: Presence | None = None
    #: Where the event is in its room's order: (id, 0) for chat message (or change) id, (n, k) for the
    #: k-th presence event after chat message n.
    at: Position | None = None
    #: For a change (an edit, delete or reaction: protocol v3's state 6), the id of the message it changes.
    target: int | None = None


class Change(NamedTuple):
    """A change asked of a message: an edit (text), a delete, or a reaction (emoji) toggled by user."""

    kind: str
    target: int
    #: Who asks: an identified user, or None for the holder of the API key, who may edit and delete any message.
    user: str | None
    name: str
    text: str = ""
    emoji: str = ""


class Changed(NamedTuple):
    """A change as its backend sent it out: its id and ts, the message's state after it, and a reaction's on."""

    id: int
    ts: int
    #: The changed message's state-2 frame as it stands now (fold.folded's JSON).
    state: str
    on: bool | None = None


class Refused(LookupError):
    """A change the rules do not allow; code is the notice's (not_found, forbidden)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Missing(Exception):
    """The backend does not hold the message a change is for: ask again with its state from the store."""


class Published(NamedTuple):
    """A chat message as its backend sent it out: its id, and the ts its frame carries."""

    id: int
    ts: int


Deliver = Callable[[str, list[Item]], None]
SignOut = Callable[[str], None]
#: Called in every process with each control message told (a JSON object), the teller's own process included.
Control = Callable[[dict[str, Any]], None]


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
    #: The id of the room's newest change the backend holds (0: none), which tells a cached replay is stale.
    changed: int = 0


@dataclass
class Entry:
    """What a joining client is told: its replay, who is online, and where in the room's order it joined."""

    replay: Replay
    online: int
    #: The names online (at most the presence list limit of them), sorted: protocol.Names when the backend keeps
    #: the room's list, so that its welcomes encode it once.
    users: Sequence[str]
    #: The position of the last event covered by the replay and the counts; live delivery starts after it.
    position: Position


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

    def start(self, deliver: Deliver, on_signout: SignOut | None = None, on_control: Control | None = None) -> None:
        """Subscribe this process: call deliver(room, items) for every event, in order, on_signout(user)
        when another process signs a user out, and on_control(message) for every control message told."""

    def sign_out(self, user: str) -> None:
        """Tell every other process sharing this backend to close the connections of user."""

    def tell(self, message: dict[str, Any]) -> None:
        """Hand a control message (a JSON object) to on_control in every process sharing this backend, this one too."""

    def once(self, key: str, seconds: float) -> bool:
        """Tell whether this is the first call with key, in any process, within seconds."""

    def publish(
        self, room: str, name: str, text: str, user: str | None = None, reply_to: int | None = None,
    ) -> Published:
        """Store a chat message (from an identified user, if given), fan it out, and return its id and ts."""

    def change(self, room: str, change: Change, seed: str | None = None) -> Changed:
        """Apply a change to a message, as one atomic step, and fan it out as an event at the room's next id.

        seed is the message's state from the store, for a message the backend
        no longer holds (it raised Missing).  Raises Refused when the message
        is deleted, or not the asker's to edit or delete.
        """

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""

    def look(self, room: str, message_id: int) -> str | None:
        """Return a message's state (fold.folded's JSON) if the backend holds it, else None."""

    def enter(
        self, room: str, member: str, name: str, since: int | None, limit: int, user: str | None = None
    ) -> Entry:
        """Add a member to the room's presence, start delivering the room here, and return what it is owed.

        One atomic step: the join event is fanned out, and the replay, the
        counts and the position are read, so that nothing the client is told
        is contradicted by an older event arriving after it.  A user in
        several connections counts once; guests count per connection.
        """

    def exit(self, room: str, member: str) -> int:
        """Remove a member from the room's presence (fanning out its leave), stop delivering it; return the count."""

    def watch(self, room: str) -> None:
        """Deliver every event of room added from now on, without joining its presence."""

    def unwatch(self, room: str) -> None:
        """Undo one watch() of room."""

    def presence(self, room: str) -> tuple[int, list[str]]:
        """Return how many are online in the room, and (at most the list limit of) their names."""

    def users(self, room: str) -> list[str]:
        """Return (at most the list limit of) the names online in the room."""

    def healthy(self) -> bool:
        """Tell whether the backend can take requests."""

    def close(self) -> None:
        """Stop delivering and release every resource."""


def create(url: str, settings: dict[str, Any], repaired: Callable[[str], None] | None = None) -> Backend:
    """Return the backend for a CHAT_BACKEND_URL; repaired(reason) counts each subscription it had to make again."""
    if url.startswith("memory://"):
        from .memory import MemoryBackend

        return MemoryBackend(settings)
    from .redis import RedisBackend

    return RedisBackend(url, settings, repaired)
