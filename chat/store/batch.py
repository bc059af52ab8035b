"""What the writer's next transaction holds: messages, claims (tickets), claims given back, conversations' changes."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..backends import Unavailable
from .conversations import Changes
from .records import Claim, Revision, Stored

OnStored = Callable[[Stored], None] | Callable[[Revision], None]


class Ticket:
    """One claim on its way through the writer: set when committed, with its outcome or error."""

    __slots__ = ("room", "cid", "done", "outcome", "error")

    def __init__(self, room: str, cid: str) -> None:
        self.room, self.cid = room, cid
        self.done = threading.Event()
        self.outcome: Claim | int = Claim.BUSY
        self.error: Unavailable | None = None


class Change:
    """Statements on their way through the writer: done once committed, with the error if it failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: Unavailable | None = None


class Batch:
    """What one transaction writes: messages with their callbacks, claims, claims given back, conversations' changes."""

    __slots__ = ("rows", "tickets", "releases", "changes", "waiting")

    def __init__(self) -> None:
        self.rows: list[tuple[Stored | Revision, OnStored | None]] = []
        self.tickets: list[Ticket] = []
        self.releases: list[tuple[str, str]] = []
        self.changes = Changes()
        self.waiting: list[Change] = []

    def __bool__(self) -> bool:
        return bool(self.rows or self.tickets or self.releases or self.changes)

    def keep(self, failed: Batch) -> None:
        """Put a failed batch's messages, releases and reads back in front of this one (its claims have failed)."""
        self.rows[:0] = failed.rows
        self.releases[:0] = failed.releases
        self.changes.keep(failed.changes)
