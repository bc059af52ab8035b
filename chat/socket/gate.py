"""The replay gate: what a joining connection is owed while its history is read.

A ``Gate`` belongs to one ``Connection`` and is used only under that
connection's lock.  While the connection joins, live batches wait here.  The
backend tells the joining connection its position in the room's order (the
last event its replay and counts cover); from then on, every event at or
before the floor is dropped (it was replayed, or it is older than the counts
in the welcome, the connection's own join included) and the floor moves with
each batch, so nothing reaches the client twice or out of order.

A v2 presence digest stands at the last presence event it covers, which can
be older than a chat message delivered while the digest waited for its
interval: digests are measured against a floor of their own, which starts at
the welcome's position and moves only with digests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..backends import Position

if TYPE_CHECKING:
    from .batch import Batch

Frame = Callable[[bytes], bytes]


class Gate:
    """Hold live batches for a joining connection, and filter what it has seen already."""

    __slots__ = ("floor", "digests", "pending", "held")

    def __init__(self) -> None:
        self.floor: Position = (0, 0)
        #: The position of the last presence digest rendered, or of the welcome.
        self.digests: Position = (0, 0)
        self.pending: list[Batch] = []
        #: Bytes of the batches waiting in pending.
        self.held = 0

    def hold(self, batch: Batch, version: int) -> None:
        """Keep a batch until the replay is written, counting the bytes a client of version will be sent."""
        self.pending.append(batch)
        self.held += len(batch.frames[version])

    def start(self, floor: Position) -> None:
        """Take the position the welcome's replay and counts cover."""
        self.floor = max(self.floor, floor)
        self.digests = max(self.digests, floor)

    def release(self) -> list[Batch]:
        """Return the waiting batches, oldest first, and keep none."""
        batches, self.pending, self.held = self.pending, [], 0
        return batches

    def render(self, batch: Batch, version: int, frame: Frame | None) -> bytes:
        """Return the bytes of batch this connection (of protocol version) is owed, and move the floor past it.

        frame encodes one payload for this connection; None means the batch's
        shared frames fit it as they are (no compression).
        """
        span = batch.spans.get(version)
        if span is None:
            # Nothing here for this version; the floor stays, so a digest of these events still comes.
            return b""
        first, last = span
        if batch.is_digest:
            if last <= self.digests:
                return b""
            self.digests = last
            return frame(batch.views[version][0][0].payload) if frame is not None else batch.frames[version]
        floor = self.floor
        view = [pair for pair in batch.views[version] if pair[0].at > floor] if first <= floor else None
        if view is not None or frame is not None:
            pairs = batch.views[version] if view is None else view
            data = b"".join([frame(item.payload) if frame is not None else encoded for item, encoded in pairs])
        else:
            data = batch.frames[version]
        if last > floor:
            self.floor = last
        return data

    def clear(self) -> None:
        """Drop what waits: the connection is closing."""
        self.pending, self.held = [], 0
