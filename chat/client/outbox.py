"""The outbox: messages and changes with client ids, kept until the server acks or refuses them."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

#: Refused for now (seconds until it is sent again); any other refusal with a cid is final.
RESEND = {"rate_limited": 1.0, "unavailable": 2.0}


class Refused(Exception):
    """The server refused a message or change for good (state 4 with its cid)."""

    def __init__(self, code: str, reason: str, cid: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason, self.cid = code, reason, cid


@dataclass
class Entry:
    """One message or change waiting for its ack."""

    cid: str
    body: dict[str, str]
    done: threading.Event = field(default_factory=threading.Event)
    id: str | None = None
    error: Exception | None = None
    sent: bool = False
    due: float = 0.0

    def result(self, timeout: float | None = None) -> str:
        """Wait for the ack and return the id the server gave; raise Refused, Closed or TimeoutError."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"no ack for {self.cid} yet (it stays queued)")
        if self.error is not None:
            raise self.error
        assert self.id is not None
        return self.id

    def frame(self) -> dict[str, str]:
        """Return what goes on the wire: the body and the client id."""
        return {**self.body, "cid": self.cid}


class Outbox:
    """Own the entries waiting for an ack, under one lock; the waiting happens outside it."""

    def __init__(self) -> None:
        #: The sender key a guest's client ids are claimed under: the same on every reconnect, so resends stay its own.
        self.key = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._error: Exception | None = None

    def add(self, body: dict[str, str]) -> Entry:
        """Queue body under a new client id, or raise the error the outbox was ended with."""
        entry = Entry(secrets.token_hex(16), body)
        with self._lock:
            if self._error is not None:
                raise self._error
            self._entries[entry.cid] = entry
        return entry

    def due(self) -> list[Entry]:
        """Return the entries not sent on this connection and due now, marked sent."""
        now = time.monotonic()
        with self._lock:
            due = [entry for entry in self._entries.values() if not entry.sent and entry.due <= now]
            for entry in due:
                entry.sent = True
        return due

    def unsend(self) -> None:
        """Mark every entry unsent: the connection they went out on is gone."""
        with self._lock:
            for entry in self._entries.values():
                entry.sent = False

    def ack(self, cid: str, message_id: str) -> None:
        """Settle cid's entry with the id the server gave it."""
        with self._lock:
            entry = self._entries.pop(cid, None)
        if entry is not None:
            entry.id = message_id
            entry.done.set()

    def refuse(self, cid: str, code: str, reason: str) -> None:
        """Send cid's entry again later when refused for now, else fail it with Refused."""
        with self._lock:
            entry = self._entries.get(cid)
            if entry is None:
                return
            if code in RESEND:
                entry.sent, entry.due = False, time.monotonic() + RESEND[code]
                return
            del self._entries[cid]
        entry.error = Refused(code, reason, cid)
        entry.done.set()

    def end(self, error: Exception) -> None:
        """Fail every entry, and every later add, with error."""
        with self._lock:
            if self._error is not None:
                return
            self._error = error
            waiting = list(self._entries.values())
            self._entries.clear()
        for entry in waiting:
            entry.error = error
            entry.done.set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
