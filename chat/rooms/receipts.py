"""Idempotency records of API posts kept in this process, for CHAT_STORE_URL=none: the answer given to each key.

Bounded in number and in age (CHAT_IDEMPOTENCY_TTL).  With a store, keys
are claimed in it instead (``api``), so that a retry on another worker or
host is answered too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: Most keys remembered; past it the oldest are forgotten first.
SIZE = 10_000


class Conflict(Exception):
    """A key in use by a request still running (409), or reused for another request (422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Receipts:
    """Remember, per key, what a request asked for and what it was answered, for ttl seconds."""

    def __init__(self, ttl: float, size: int = SIZE, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size = ttl, size
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (what was asked, the answer or None while pending, when it expires), oldest first.
        self._entries: OrderedDict[Any, tuple[Any, dict | None, float]] = OrderedDict()

    def begin(self, key: Any, asked: Any) -> dict | None:
        """Return the answer already given for key, or None after reserving key; raise Conflict."""
        now = self._clock()
        with self._lock:
            entries = self._entries
            while entries and next(iter(entries.values()))[2] <= now:
                entries.popitem(last=False)
            entry = entries.get(key)
            if entry is not None:
                if entry[0] != asked:
                    raise Conflict(422, "this Idempotency-Key was used for a different request")
                if entry[1] is None:
                    raise Conflict(409, "a request with this Idempotency-Key is still running")
                return entry[1]
            entries[key] = (asked, None, now + self.ttl)
            while len(entries) > self.size:
                entries.popitem(last=False)
        return None

    def finish(self, key: Any, answer: dict) -> None:
        """Record the answer of the request that reserved key."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] is None:
                self._entries[key] = (entry[0], answer, entry[2])

    def forget(self, key: Any) -> None:
        """Drop a reservation whose request failed, so that a retry runs again."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[1] is None:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
