"""Users signed out: their tokens issued before the sign-out are refused for CHAT_SIGNOUT_TTL.

A sign-out closes a user's connections in every process; a client that still
holds a token would reconnect at once.  So each process remembers when each
user was signed out, and refuses tokens issued (iat) until then, for as long
as such a token may still be valid.  At most ``LIMIT`` users are remembered,
the oldest sign-outs forgotten first.  One lock guards the record.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

#: Most sign-outs remembered at once.
LIMIT = 100_000


class SignOuts:
    """Remember when each user was signed out, for ttl seconds."""

    def __init__(self, ttl: float, limit: int = LIMIT) -> None:
        self.ttl, self.limit = ttl, limit
        self._lock = threading.Lock()
        #: user -> when they were signed out (time.time()), oldest first.
        self._at: OrderedDict[str, float] = OrderedDict()

    def record(self, user: str) -> None:
        """Remember that user was signed out now."""
        now = time.time()
        with self._lock:
            self._at[user] = now
            self._at.move_to_end(user)
            self._forget_locked(now)

    def refuses(self, user: str, issued: float) -> bool:
        """Tell whether a token of user issued at issued predates the user's sign-out."""
        now = time.time()
        with self._lock:
            self._forget_locked(now)
            at = self._at.get(user)
        return at is not None and issued <= at

    def _forget_locked(self, now: float) -> None:
        kept = self._at
        while kept and (len(kept) > self.limit or next(iter(kept.values())) <= now - self.ttl):
            kept.popitem(last=False)
