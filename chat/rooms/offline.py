"""The offline hook: call it once, in one process, when a user's last connection anywhere has been closed for a while.

Each process counts its own connections per user and tells the others
(``backend.tell``) when a user's first one opens and its last one closes
here, so each knows which other processes hold the user; a process that
holds the user answers another's "online" with "here", so one started later
learns of the connections made before it.  The process where
the last one closed waits ``grace`` seconds on its thread; if the user is
still nowhere then, ``backend.once`` makes sure one process alone calls the
hook, even when two closed the user's last connections together.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..backends import Backend, Unavailable

log = logging.getLogger(__name__)

#: Called with the user's id once it is gone.
Gone = Callable[[str], None]


class Offline:
    """Track each user's connections across processes and call gone(user) once they have all been closed a while."""

    def __init__(self, backend: Backend, origin: str, grace: float, gone: Gone, wanted: Callable[[], bool]) -> None:
        self.backend = backend
        #: This process, as its control messages name it.
        self.origin = origin
        self.grace = grace
        self._gone = gone
        self._wanted = wanted
        # Reentrant, so that notify() asks the lock whether it is held: with a plain Lock it tries to take it,
        # which under gevent yields to the hub while holding it.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._here: dict[str, int] = {}
        #: user -> the other processes that hold a connection of it.
        self._elsewhere: dict[str, set[str]] = {}
        self._due: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="chat-offline", daemon=True)
        self._started = False

    def connected(self, user: str) -> None:
        """Count a connection of user opened here."""
        if not self._wanted():
            return
        with self._lock:
            count = self._here[user] = self._here.get(user, 0) + 1
            self._start_locked()
        if count == 1:
            self._tell({"online": user, "origin": self.origin})

    def disconnected(self, user: str) -> None:
        """Count a connection of user closed here; after its last one, wait grace seconds to call the hook."""
        with self._lock:
            count = self._here.get(user)
            if count is None:
                return
            if count > 1:
                self._here[user] = count - 1
                return
            del self._here[user]
            heapq.heappush(self._due, (time.monotonic() + self.grace, user))
            self._wake.notify()
        self._tell({"offline": user, "origin": self.origin})

    def control(self, message: dict[str, Any]) -> None:
        """Record what another process told of its users' connections."""
        origin = message.get("origin")
        if origin == self.origin or not isinstance(origin, str):
            return
        answer = None
        with self._lock:
            if isinstance(user := message.get("online") or message.get("here"), str):
                self._elsewhere.setdefault(user, set()).add(origin)
                if "online" in message and user in self._here:
                    answer = {"here": user, "origin": self.origin}
            elif isinstance(user := message.get("offline"), str):
                others = self._elsewhere.get(user)
                if others is not None:
                    others.discard(origin)
                    if not others:
                        del self._elsewhere[user]
        if answer is not None:
            self._tell(answer)

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        with self._lock:
            self._stop = True
            self._wake.notify()
            started = self._started
        if started:
            self._thread.join(5)

    def _start_locked(self) -> None:
        if not self._started and not self._stop:
            self._started = True
            self._thread.start()

    def _tell(self, message: dict[str, Any]) -> None:
        try:
            self.backend.tell(message)
        except Unavailable as exc:
            log.warning("could not tell the other processes %s: %s", message, exc)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and (not self._due or self._due[0][0] > time.monotonic()):
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._stop:
                    return
                _, user = heapq.heappop(self._due)
                away = user not in self._here and not self._elsewhere.get(user)
            if away:
                self._call(user)

    def _call(self, user: str) -> None:
        try:
            if not self.backend.once(f"offline:{user}", self.grace):
                return
            self._gone(user)
        except Exception:
            log.exception("the offline hook for %s failed", user)
