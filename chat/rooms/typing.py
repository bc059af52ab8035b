"""Typing: whether a sender may tell a room it is typing now (once per EVERY seconds); nothing is kept longer."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: Seconds between two typing events of one sender in one room.
EVERY = 2.0


class Typing:
    """Remember when each (room, user) last told it was typing, for EVERY seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: (room, user) -> when it last told, oldest first: what is older than EVERY is dropped as new ones come.
        self._told: OrderedDict[tuple[str, str], float] = OrderedDict()

    def allow(self, room: str, user: str) -> bool:
        """Tell whether user's typing in room goes out now, and if so count it as told."""
        now = self._clock()
        key = (room, user)
        with self._lock:
            told = self._told
            while told:
                oldest = next(iter(told.values()))
                if now - oldest < EVERY:
                    break
                told.popitem(last=False)
            if key in told:
                return False
            told[key] = now
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._told)
