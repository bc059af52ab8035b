"""What the store keeps and answers: a stored message, a claim's outcome, and the retention rule.

Plain values with no I/O, shared by the writer, the databases and their callers.
"""

from __future__ import annotations

import enum
import json
from typing import NamedTuple

from ..backends import Item, fold

#: Seconds after which a claim whose message was never stored may be taken over
#: (its process died between claiming and storing).
STALE = 10.0


class Stored(NamedTuple):
    """One chat message as the store keeps it; the field order is the tables' column order."""

    room: str
    id: int
    ts: int
    name: str
    text: str
    user: str | None = None
    #: The client id a v2 sender gave it, if any.
    cid: str | None = None
    #: The message it replies to, if any.
    reply_to: int | None = None
    #: Once changed: its state-2 frame as it stands (fold.folded's JSON), and text is "".
    state: str | None = None

    def item(self) -> Item:
        """Return the message as a backend's history item, with the same state-2 payload (folded, once changed)."""
        if self.state is not None:
            return Item(self.id, self.state.encode(), None, (self.id, 0))
        payload = fold.message(self.id, self.room, self.name, self.text, self.ts, self.user, self.reply_to)
        return Item(self.id, payload, None, (self.id, 0))

    def folded(self, state: str) -> Stored:
        """Return this message changed to state, keeping no copy of its text."""
        return self._replace(text="", state=state)


class Revision(NamedTuple):
    """One change to a message, as the store keeps it: the change's own row, and its message's state after it."""

    room: str
    id: int
    target: int
    ts: int
    kind: str
    user: str | None
    name: str
    emoji: str
    on: bool | None
    #: The target's state-2 frame after the change, which the store folds into the message's row.
    state: str

    def item(self) -> Item:
        """Return the change as a backend's history item: its state-6 event (an edit with the message's text now)."""
        text = json.loads(self.state)["message"] if self.kind == "edit" else None
        payload = fold.event(self.kind, self.room, self.target, self.id, self.user, self.name, self.ts, text,
                                  self.emoji, self.on)
        return Item(self.id, payload, None, (self.id, 0), self.target)


class Claim(enum.Enum):
    """What claiming a client id found, when it found no message already stored under it."""

    #: Nobody has sent it: the claimant sends it now.
    MINE = "mine"
    #: Another connection (here or in another process) is sending it now.
    BUSY = "busy"


class Retention(NamedTuple):
    """How long a room's messages are kept: an age in seconds, a count per room, both, or neither (forever)."""

    age: float | None = None
    count: int | None = None

    @property
    def forever(self) -> bool:
        """Tell whether nothing is ever removed."""
        return self.age is None and self.count is None
