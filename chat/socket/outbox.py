"""The bounded queue of bytes waiting for one socket.

An ``Outbox`` belongs to one ``Connection`` and is used only under that
connection's lock.  It writes without ever blocking: what the socket does not
take now waits as memoryview chunks (never copied per recipient or per partial
write), and ``queued`` is exactly the number of bytes waiting, all of it
counted against the limit: the replay a joining client is owed too, so that
a client that reads nothing holds at most the limit, whatever it joined.
"""

from __future__ import annotations

import enum
import socket
from collections import deque
from itertools import islice
from typing import Any

#: Most chunks handed to one sendmsg call (Linux's IOV_MAX is 1024).
IOV_MAX = 512


class Write(enum.Enum):
    """What became of a write or a flush."""

    SENT = "sent"  # all of it is in the socket; nothing waits
    STARTED = "started"  # the socket took part: a backlog begins, watch the socket
    QUEUED = "queued"  # a backlog was there already (or remains after a flush)
    OVER = "over"  # the backlog passed the limit
    BROKEN = "broken"  # the socket failed


class Outbox:
    """Write to one socket without blocking, and keep the rest in order within a limit."""

    __slots__ = ("sock", "limit", "chunks", "queued", "partial")

    def __init__(self, sock: Any, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        #: Made on the first backlog: most sockets never have one, and an empty deque costs 760 bytes.
        self.chunks: deque[memoryview] | None = None
        self.queued = 0
        self.partial = False

    @property
    def empty(self) -> bool:
        """Tell whether nothing waits."""
        return not self.chunks

    def write(self, data: bytes, *, limited: bool = True) -> Write:
        """Send data after what waits, or queue what the socket cannot take now."""
        if not data:
            return Write.QUEUED if self.chunks else Write.SENT
        chunks = self.chunks
        if chunks:
            chunks.append(memoryview(data))
            self.queued += len(data)
            return Write.OVER if limited and self.over else Write.QUEUED
        try:
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            return Write.BROKEN
        if sent == len(data):
            return Write.SENT
        if chunks is None:
            chunks = self.chunks = deque()
        chunks.append(memoryview(data)[sent:])
        self.queued = len(data) - sent
        self.partial = sent > 0
        return Write.OVER if limited and self.over else Write.STARTED

    def write_parts(self, parts: list[bytes]) -> Write:
        """Send parts (frames, or a frame's head and its shared payload) after what waits, queueing them uncopied."""
        backlog = bool(self.chunks)
        chunks = self.chunks
        if chunks is None:
            chunks = self.chunks = deque()
        for part in parts:
            if part:
                chunks.append(memoryview(part))
                self.queued += len(part)
        if backlog:
            return Write.OVER if self.over else Write.QUEUED
        verdict = self.flush()
        if verdict is Write.SENT:
            self.chunks = None
        elif verdict is Write.QUEUED:
            return Write.OVER if self.over else Write.STARTED
        return verdict

    @property
    def over(self) -> bool:
        """Tell whether more is waiting than the limit allows."""
        return self.queued > self.limit

    def flush(self) -> Write:
        """Send what waits, as far as the socket takes it now: SENT when all went, QUEUED while some waits."""
        chunks = self.chunks
        while chunks:
            try:
                sent = self.sock.sendmsg(list(islice(chunks, IOV_MAX)), (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return Write.QUEUED
            except OSError:
                return Write.BROKEN
            self.queued -= sent
            while chunks and sent >= len(chunks[0]):
                sent -= len(chunks.popleft())
            self.partial = sent > 0
            if sent:
                chunks[0] = chunks[0][sent:]
                return Write.QUEUED
        return Write.SENT

    def trim(self) -> None:
        """Drop everything that waits except the rest of a frame already partly sent."""
        chunks = self.chunks
        head = chunks.popleft() if self.partial and chunks else None
        if chunks is not None:
            chunks.clear()
            if head is not None:
                chunks.append(head)
        self.queued = len(head) if head is not None else 0

    def clear(self) -> None:
        """Drop everything that waits."""
        self.chunks = None
        self.queued = 0
        self.partial = False
