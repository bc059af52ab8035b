"""The lifecycle of one connection: JOINING -> OPEN -> CLOSING -> DONE, with its close code.

A ``Lifecycle`` belongs to one ``Connection`` and is changed only under that
connection's lock.  Every "may this connection still be written to?" and
"is it closed?" question is answered here, and a transition that the
lifecycle does not allow raises ``TransitionError`` instead of passing
silently.
"""

from __future__ import annotations

import enum
import time


class State(enum.Enum):
    """Where a connection is in its life."""

    JOINING = "joining"
    OPEN = "open"
    CLOSING = "closing"
    DONE = "done"


class TransitionError(RuntimeError):
    """A connection was asked to move to a state it cannot reach from where it is."""


#: Code recorded for a connection that ended without a close handshake.
ABNORMAL = 1006

ALLOWED = {
    State.JOINING: {State.OPEN, State.CLOSING, State.DONE},
    State.OPEN: {State.CLOSING, State.DONE},
    State.CLOSING: {State.DONE},
    State.DONE: set(),
}


class Lifecycle:
    """Hold a connection's state, and the close code, reason and deadline once it closes."""

    __slots__ = ("state", "code", "reason", "deadline")

    def __init__(self) -> None:
        self.state = State.JOINING
        self.code: int | None = None
        self.reason = ""
        self.deadline = 0.0

    def _move(self, target: State) -> None:
        if target not in ALLOWED[self.state]:
            raise TransitionError(f"a connection cannot go from {self.state.value} to {target.value}")
        self.state = target

    @property
    def live(self) -> bool:
        """Tell whether events may still be written (joining or open)."""
        return self.state is State.JOINING or self.state is State.OPEN

    def open(self) -> None:
        """Mark the replay as written: live events now go straight to the socket."""
        self._move(State.OPEN)

    def close(self, code: int, reason: str, wait: float) -> bool:
        """Start closing with code; return False if the connection is closing or done already."""
        if not self.live:
            return False
        self._move(State.CLOSING)
        self.code, self.reason = code, reason
        self.deadline = time.monotonic() + wait
        return True

    def lose(self, reason: str = "connection lost") -> None:
        """End at once: the socket broke or the peer went away without a close frame."""
        if self.state is State.DONE:
            return
        if self.code is None:
            self.code, self.reason = ABNORMAL, reason
        self.deadline = time.monotonic()
        self._move(State.DONE)

    def end(self) -> None:
        """End after a close handshake (or its deadline); keep the code already recorded."""
        if self.state is State.DONE:
            return
        if self.code is None:
            self.code, self.reason = ABNORMAL, "connection ended"
        self._move(State.DONE)
