"""What a client may spend: token buckets per connection, and per identity or address across reconnects.

A ``Bucket`` holds rate tokens a second, at most burst at once.  ``Buckets``
keeps one bucket per key (a user's id, a guest's address) for every
connection of that key in this process, so that reconnecting starts from
what the last connection left, not from a full burst.  A bucket left alone
until it is full again and its drops have aged out is the same as a new one,
so it is forgotten then; at most ``LIMIT`` buckets are kept, the least
recently used forgotten first.  One lock guards the buckets.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

#: Seconds of drops over which a flood is judged.
FLOOD_WINDOW = 10
#: Most buckets kept at once.
LIMIT = 100_000


class Bucket:
    """A token bucket: rate tokens a second, at most burst at once, and the drops of the last window."""

    __slots__ = ("rate", "burst", "tokens", "refilled", "drops")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst, self.tokens = rate, burst, burst
        self.refilled = time.monotonic()
        self.drops: deque[float] | None = None

    def take(self, now: float | None = None) -> bool:
        """Take a token if there is one; count a drop if not."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.refilled) * self.rate)
        self.refilled = max(now, self.refilled)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        drops = self.drops
        if drops is None:
            drops = self.drops = deque()
        drops.append(now)
        while drops and drops[0] < now - FLOOD_WINDOW:
            drops.popleft()
        return False

    def flooding(self) -> bool:
        """Tell whether the drops of the last window pass five times the rate."""
        return self.drops is not None and len(self.drops) > self.rate * FLOOD_WINDOW * 5

    def idle(self, now: float) -> bool:
        """Tell whether the bucket is full again and its drops are out of the window: as good as new."""
        return now - self.refilled >= max(self.burst / self.rate, FLOOD_WINDOW)


class Buckets:
    """One bucket per key, shared by every connection of the key in this process, for as long as it matters."""

    def __init__(self, rate: float, burst: float, limit: int = LIMIT) -> None:
        self.rate, self.burst, self.limit = rate, burst, limit
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str) -> tuple[bool, bool]:
        """Take a token from key's bucket: return whether one was there, and whether key is flooding."""
        now = time.monotonic()
        with self._lock:
            buckets = self._buckets
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = Bucket(self.rate, self.burst)
            else:
                buckets.move_to_end(key)
            taken = bucket.take(now)
            flooding = not taken and bucket.flooding()
            while buckets:
                oldest = next(iter(buckets.values()))
                if len(buckets) <= self.limit and not oldest.idle(now):
                    break
                buckets.popitem(last=False)
        return taken, flooding

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)
