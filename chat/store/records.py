"""What the store keeps and answers: a stored message, a claim's outcome, and the retention rule.

Plain values with no I/O, shared by the writer, the databases and their callers.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .. import protocol
from ..backends import Item

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

    def item(self) -> Item:
        """Return the message as a backend's history item, with the same state-2 payload."""
        payload = protocol.chat(self.id, self.room, self.name, self.text, self.ts, self.user)
        return Item(self.id, payload, None, (self.id, 0))


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
