"""What a backend delivers, collected for tests that drive a backend directly."""

from __future__ import annotations

import threading
from collections.abc import Callable

from chat.backends import Backend

__all__ = ["Inbox", "started"]


class Inbox:
    """Collect what a backend delivers, and wait for conditions on it."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int | None, bytes]] = []
        self._changed = threading.Condition()

    def __call__(self, room: str, items: list[tuple[int | None, bytes]]) -> None:
        with self._changed:
            self.events.extend((room, item.id, item.payload) for item in items)
            self._changed.notify_all()

    def ids(self, room: str) -> list[int]:
        """Return the chat ids delivered for room, in delivery order."""
        with self._changed:
            return [message_id for r, message_id, _ in self.events if r == room and message_id is not None]

    def payloads(self, room: str) -> list[bytes]:
        """Return every payload delivered for room, in delivery order."""
        with self._changed:
            return [payload for r, _, payload in self.events if r == room]

    def wait(self, predicate: Callable[[Inbox], bool], timeout: float = 10.0) -> None:
        """Wait until predicate holds, or fail after timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"timed out after {timeout} s; delivered: {self.events[-10:]}")


def started(backend: Backend, *rooms: str) -> Inbox:
    """Start backend with a fresh inbox and watch rooms."""
    inbox = Inbox()
    backend.start(inbox)
    for room in rooms:
        backend.watch(room)
    return inbox
