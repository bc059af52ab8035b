"""Presence batching for protocol v2: at most one presence event per room per interval.

A ``Coalescer`` belongs to the fan-out thread, which alone calls it (no
lock).  Join and leave events of a room gather until the room's next turn:
a member who joined and left within one interval nets out, and what is sent is
who joined and left (names, while the room has at most ``limit`` members;
counts only above that) and the exact online count after the last event.  So
a storm of N joins into one room costs each v2 client a frame per interval,
not N frames.

A digest costs one delivery per member, so a big room's digests are spaced
further apart: after a digest to n members, the room's next one waits
``n / RATE`` seconds when that is longer than the interval.  A storm of N
joins then costs about ``RATE`` deliveries a second in presence, instead of
N per interval, which made the whole storm cost O(N²).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import protocol
from ..backends import Item, Position, Presence

#: Deliveries a second that one room's digests may cost before its interval stretches.
RATE = 4000


@dataclass
class Pending:
    """What happened in one room since its last presence event."""

    due: float
    joins: dict[str, str] = field(default_factory=dict)
    leaves: dict[str, str] = field(default_factory=dict)
    online: int = 0
    at: Position = (0, 0)


class Coalescer:
    """Gather each room's presence events and hand them out once per interval."""

    def __init__(self, interval: float, limit: int) -> None:
        self.interval = interval
        self.limit = limit
        self._pending: dict[str, Pending] = {}
        #: When each room that had a presence event sent may have the next one.
        self._next: dict[str, float] = {}
        #: When _next is next swept of rooms whose wait has ended.
        self._sweep = 0.0

    def add(self, room: str, said: Presence, at: Position) -> None:
        """Take one presence event of room."""
        pending = self._pending.get(room)
        if pending is None:
            due = max(time.monotonic(), self._next.get(room, 0.0))
            pending = self._pending[room] = Pending(due)
        if said.event == "join":
            pending.joins[said.member] = said.name
        elif pending.joins.pop(said.member, None) is None:
            pending.leaves[said.member] = said.name
        pending.online, pending.at = said.online, at

    def due(self) -> float | None:
        """Return when the next room's presence event is due, or None if none waits."""
        return min((pending.due for pending in self._pending.values()), default=None)

    def take(self, now: float) -> list[tuple[str, Item]]:
        """Return the presence events due by now, one per room, and forget what they cover."""
        ready = [room for room, pending in self._pending.items() if pending.due <= now]
        events = []
        for room in ready:
            pending = self._pending.pop(room)
            self._next[room] = now + max(self.interval, pending.online / RATE)
            listed = pending.online <= self.limit
            joins = sorted(pending.joins.values())[: self.limit] if listed else []
            leaves = sorted(pending.leaves.values())[: self.limit] if listed else []
            payload = protocol.digest(room, joins, leaves, len(pending.joins), len(pending.leaves), pending.online)
            events.append((room, Item(None, payload, None, pending.at)))
        # Rooms quiet since their wait ended need no memory of their last event. The fan-out calls this
        # on every round, so the sweep (which walks every room that sent one lately) runs once an interval.
        if now >= self._sweep:
            self._sweep = now + self.interval
            for room in [room for room, allowed in self._next.items() if allowed < now and room not in ready]:
                del self._next[room]
        return events
