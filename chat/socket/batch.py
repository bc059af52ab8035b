"""A batch of one room's events, their frames encoded once for every recipient of each protocol version."""

from __future__ import annotations

from dataclasses import dataclass

from ..backends import Item, Position
from . import wire


@dataclass(slots=True)
class Batch:
    """Events for one room, with their frames encoded once for every recipient.

    A v1 client gets the chat messages and each join and leave while the room
    has at most the list limit of members; a v2 client gets the chat messages,
    and presence as digests (``coalescer``); a v3 client what v2 gets and the
    changes (state 6); its own events (receipts, typing) go to its connections alone.  ``views`` holds, per version, the
    items it gets with their frames; ``frames`` the same run joined.
    """

    views: dict[int, list[tuple[Item, bytes]]]
    frames: dict[int, bytes]
    #: Per version, the positions of the first and last events that version gets.
    spans: dict[int, tuple[Position, Position]]
    #: Whether this is a v2 presence digest, which a gate measures against its digests' floor.
    is_digest: bool = False

    @classmethod
    def of(cls, items: list[Item], limit: int) -> Batch:
        """Encode live items (which carry their positions, in order) for each protocol version."""
        # Only what some version gets is encoded: a big room's presence goes into digests alone.
        encoded = [
            (item, wire.text_frame(item.payload))
            for item in items
            if item.presence is None or item.presence.online <= limit
        ]
        if not any(item.target is not None for item, _ in encoded):
            v2 = [pair for pair in encoded if pair[0].presence is None]
            return cls.viewed(encoded, v2)
        v1 = [pair for pair in encoded if pair[0].target is None]
        v2 = [pair for pair in v1 if pair[0].presence is None]
        v3 = [pair for pair in encoded if pair[0].presence is None]
        return cls.viewed(v1, v2, v3)

    @classmethod
    def digest(cls, item: Item) -> Batch:
        """Encode a v2 presence digest, which v1 clients do not get."""
        batch = cls.viewed([], [(item, wire.text_frame(item.payload))])
        batch.is_digest = True
        return batch

    @classmethod
    def viewed(cls, v1: list, v2: list, v3: list | None = None) -> Batch:
        """Build a batch from each version's items and frames (v3's are v2's unless given)."""
        views = {1: v1, 2: v2, 3: v2 if v3 is None else v3}
        frames = {1: b"".join([frame for _, frame in v1]), 2: b"".join([frame for _, frame in v2])}
        frames[3] = frames[2] if v3 is None else b"".join([frame for _, frame in v3])
        spans = {version: (view[0][0].at, view[-1][0].at) for version, view in views.items() if view}
        return cls(views, frames, spans)

    def empty(self) -> bool:
        """Tell whether no client of any version gets anything from this batch."""
        return not any(self.frames.values())
