"""The replay gate: what a joining connection is owed while its history is read.

A ``Gate`` belongs to one ``Connection`` and is used only under that
connection's lock.  While the connection joins, live batches wait here; the
replay then moves the id floor to the last message it sent, and each waiting or
later batch is rendered without what the replay already covered.  The
connection's own join event (recognised by its member id, never by its bytes)
is dropped: the welcome already told the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fanout import Batch

Frame = Callable[[bytes], bytes]


class Gate:
    """Hold live batches for a joining connection, and filter what it has seen already."""

    __slots__ = ("own", "floor", "pending", "held")

    def __init__(self, own: str) -> None:
        self.own: str | None = own
        self.floor = 0
        self.pending: list[Batch] = []
        #: Bytes of the batches waiting in pending.
        self.held = 0

    def hold(self, batch: Batch) -> None:
        """Keep a batch until the replay is written."""
        self.pending.append(batch)
        self.held += len(batch.frame)

    def release(self) -> list[Batch]:
        """Return the waiting batches, oldest first, and keep none."""
        batches, self.pending, self.held = self.pending, [], 0
        return batches

    def render(self, batch: Batch, frame: Frame | None) -> bytes:
        """Return the bytes of batch this connection is owed, and move the floor past it.

        frame encodes one payload for this connection; None means the batch's
        shared frames fit it as they are (no compression).
        """
        seen = batch.first_id is not None and batch.first_id <= self.floor
        mine = self.own is not None and self.own in batch.joiners
        if seen or mine:
            data = self._unseen(batch, frame)
        elif frame is not None:
            data = b"".join([frame(item.payload) for item in batch.items])
        else:
            data = batch.frame
        if batch.last_id is not None and batch.last_id > self.floor:
            self.floor = batch.last_id
        return data

    def _unseen(self, batch: Batch, frame: Frame | None) -> bytes:
        parts = []
        for item, encoded in zip(batch.items, batch.frames, strict=True):
            if item.id is None:
                if item.joiner is not None and item.joiner == self.own:
                    self.own = None
                    continue
            elif item.id <= self.floor:
                continue
            parts.append(frame(item.payload) if frame is not None else encoded)
        return b"".join(parts)

    def clear(self) -> None:
        """Drop what waits: the connection is closing."""
        self.pending, self.held = [], 0
