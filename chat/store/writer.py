"""The store's writer thread: it owns the queue of writes and commits them in batches.

Callers (the hub's publishing threads, the API) only queue: ``append`` adds
a message, ``claim`` a v2 client id and waits for its outcome, ``release``
gives a claim back.  The thread takes everything queued, writes it in one
transaction, then calls each message's ``on_stored`` (the v2 ack) and wakes
each claimant.  While it commits, more queues up, so a busy room gets bigger
batches instead of more commits.  Between batches it syncs (once a second
while there were writes) and prunes (one chunk at a time, when due).  If the
database fails, the messages stay queued (and readable through ``pending``)
and are retried with backoff (an empty transaction when nothing is queued,
so that health comes back with the database); claims fail at once.
"""

from __future__ import annotations

import logging
import threading
import time

from ..backends import Unavailable
from .batch import Batch, Change, OnStored, Ticket
from .conversations import Statement
from .records import Claim, Retention, Revision, Stored
from .retention import Pruner
from .sql import Database

log = logging.getLogger(__name__)

#: Seconds between syncs while there are writes: what a machine crash may take (SQLite).
SYNC_EVERY = 1.0
#: Seconds between the starts of two commits: how long a message may wait for the next batch.
BATCH_EVERY = 0.02
#: Messages queued but not yet stored beyond which new messages are refused.
BACKLOG_LIMIT = 100_000
#: Seconds a claimant waits for its claim to be committed.
CLAIM_WAIT = 10.0
#: Retry delays after a failed write: first, and at most.
RETRY_FIRST, RETRY_MAX = 0.1, 5.0
#: Attempts a stopping writer still makes to store what is queued.
FINAL_ATTEMPTS = 3

class Writer:
    """Commit queued messages and claims in batches on one named thread.

    The lock guards the queued batch, the pending messages and the counts;
    the thread alone sets the rest (failing, dirty, synced).
    """

    def __init__(self, database: Database, retention: Retention, prune_every: float) -> None:
        self._db = database
        self._pruner = Pruner(retention, prune_every)
        # Reentrant, so that notify() asks the lock whether it is held: with a plain Lock it tries to take it,
        # which under gevent yields to the hub while holding it.
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._queued = Batch()
        #: Per room, the messages queued or being written: readable before they are committed.
        self._pending: dict[str, dict[int, Stored]] = {}
        #: Per room, the state each message has after the changes queued or being written.
        self._folds: dict[str, dict[int, str]] = {}
        self._backlog = 0
        self._appended = self._committed = 0
        #: The thread waits for work (not for the batch to fill): only then does a message wake it.
        self._idle = False
        self._failing = False
        #: The thread has returned (or died): a flag, since is_alive() yields to gevent's hub on every call.
        self._ended = False
        #: Committed messages not yet synced.
        self._dirty = False
        self._synced = self._opened = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="chat-store", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    # Queueing, from any thread.

    def ready(self) -> None:
        """Raise Unavailable when the writer would not take a message now."""
        if self._stop.is_set():
            raise Unavailable("the message store is closed")
        if self._ended:
            raise Unavailable("the message store's writer has stopped")
        if self._backlog >= BACKLOG_LIMIT:
            raise Unavailable("the message store is not keeping up")

    def append(self, row: Stored | Revision, on_stored: OnStored | None = None) -> None:
        """Queue a message or a change; on_stored(row) is called on the writer thread once it is committed."""
        with self._lock:
            self._queued.rows.append((row, on_stored))
            if type(row) is Stored:
                self._pending.setdefault(row.room, {})[row.id] = row
            else:
                # What is read before the commit is the message as it stands, not its text before the change.
                self._folds.setdefault(row.room, {})[row.target] = row.state
                waiting = self._pending.get(row.room)
                target = None if waiting is None else waiting.get(row.target)
                if target is not None:
                    waiting[row.target] = target.folded(row.state)
            self._backlog += 1
            self._appended += 1
            if self._idle:
                self._wake.notify()

    def claim(self, room: str, cid: str) -> Claim | int:
        """Claim cid in room and wait until it is committed: MINE, BUSY, or the id it was stored under."""
        ticket = Ticket(room, cid)
        with self._lock:
            if self._stop.is_set():
                raise Unavailable("the message store is closed")
            self._queued.tickets.append(ticket)
            self._wake.notify()
        if not ticket.done.wait(CLAIM_WAIT):
            raise Unavailable("the message store did not answer in time")
        if ticket.error is not None:
            raise ticket.error
        return ticket.outcome

    def read(self, room: str, user: str, message_id: int) -> None:
        """Queue moving user's read position in room forward to message_id, for the next batch."""
        with self._lock:
            self._queued.changes.read(room, user, message_id)
            self._appended += 1
            if self._idle:
                self._wake.notify()

    def change(self, statements: list[Statement]) -> None:
        """Run statements in the next batch's transaction and wait until it is committed."""
        change = Change()
        with self._lock:
            if self._stop.is_set():
                raise Unavailable("the message store is closed")
            self._queued.changes.statements.extend(statements)
            self._queued.waiting.append(change)
            self._wake.notify()
        if not change.done.wait(CLAIM_WAIT):
            raise Unavailable("the message store did not answer in time")
        if change.error is not None:
            raise change.error

    def release(self, room: str, cid: str) -> None:
        """Give back a claim whose message was not sent."""
        with self._lock:
            self._queued.releases.append((room, cid))
            self._wake.notify()

    def pending(self, room: str) -> list[Stored]:
        """Return the messages of room queued or being written."""
        with self._lock:
            rows = self._pending.get(room)
            return list(rows.values()) if rows else []

    def snapshot(self, room: str) -> tuple[list[Stored], dict[int, str]]:
        """Return, at one moment, room's messages queued or being written and the states its queued changes leave.

        Read before the database, what commits meanwhile is in one or the other.
        """
        with self._lock:
            rows, folds = self._pending.get(room), self._folds.get(room)
            return list(rows.values()) if rows else [], dict(folds) if folds else {}

    def healthy(self) -> bool:
        """Tell whether the thread runs and its last write succeeded."""
        return not (self._ended or self._failing)

    def flush(self, timeout: float) -> bool:
        """Wait until every message appended so far is committed; False if timeout passed first."""
        with self._wake:
            target = self._appended
            return self._wake.wait_for(lambda: self._committed >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, stop the thread and wait for it."""
        with self._lock:
            self._stop.set()
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # The thread.

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            self._ended = True

    def _serve(self) -> None:
        failures = 0
        while True:
            batch, stopping = self._next()
            # While failing, an empty transaction tells when the database is back.
            if (batch or (self._failing and not stopping)) and not self._commit(batch):
                failures += 1
                if stopping and failures >= FINAL_ATTEMPTS:
                    log.error("the message store is unavailable: %d messages were not stored", self._backlog)
                    return
                delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1))
                # Once stopping, the stop event no longer waits.
                if stopping:
                    time.sleep(delay)
                else:
                    self._stop.wait(delay)
                continue
            failures = 0
            self._housekeep(stopping)
            if stopping:
                with self._lock:
                    if not self._queued:
                        return

    def _next(self) -> tuple[Batch, bool]:
        """Wait for work (or for housekeeping to fall due), then for the batch to fill; take it and say if stopping."""
        with self._wake:
            self._idle = True
            while not (self._queued or self._failing or self._stop.is_set()):
                if not self._wake.wait(self._idle_for()):
                    break
            self._idle = False
            # At most one commit per BATCH_EVERY, so what a busy room sends meanwhile shares it;
            # a claim does not wait for it, since its sender waits for the claim.
            self._wake.wait_for(lambda: self._queued.tickets or self._queued.waiting or self._stop.is_set(),
                                self._opened + BATCH_EVERY - time.monotonic())
            self._opened = time.monotonic()
            batch, self._queued = self._queued, Batch()
            return batch, self._stop.is_set()

    def _idle_for(self) -> float | None:
        waits = []
        if self._dirty:
            waits.append(self._synced + SYNC_EVERY - time.monotonic())
        prune_in = self._pruner.wait()
        if prune_in is not None:
            waits.append(prune_in)
        return max(0.0, min(waits)) if waits else None

    def _commit(self, batch: Batch) -> bool:
        """Write batch in one transaction, then tell its claimants and callbacks; False if the database failed."""
        try:
            outcomes = self._db.write([row for row, _ in batch.rows],
                                      [(ticket.room, ticket.cid) for ticket in batch.tickets], batch.releases,
                                      time.time(), batch.changes.write if batch.changes else None)
        except Unavailable as exc:
            if not self._failing:
                log.warning("%s; retrying", exc)
            self._failing = True
            with self._lock:
                self._queued.keep(batch)
            for waiter in [*batch.tickets, *batch.waiting]:
                waiter.error = exc
                waiter.done.set()
            return False
        self._failing = False
        self._dirty = self._dirty or bool(batch.rows)
        with self._wake:
            for row, _ in batch.rows:
                table = self._pending if type(row) is Stored else self._folds
                key = row.id if type(row) is Stored else row.target
                waiting = table.get(row.room)
                if waiting is not None and (type(row) is Stored or waiting.get(key) == row.state):
                    waiting.pop(key, None)
                    if not waiting:
                        del table[row.room]
            self._backlog -= len(batch.rows)
            self._committed += len(batch.rows) + batch.changes.calls
            self._wake.notify_all()
        for ticket, outcome in zip(batch.tickets, outcomes, strict=True):
            ticket.outcome = outcome
            ticket.done.set()
        for change in batch.waiting:
            change.done.set()
        for row, on_stored in batch.rows:
            if on_stored is not None:
                try:
                    on_stored(row)
                except Exception:
                    log.exception("a stored-message callback failed")
        return True

    def _housekeep(self, stopping: bool) -> None:
        now = time.monotonic()
        try:
            if self._dirty and (stopping or now >= self._synced + SYNC_EVERY):
                self._db.sync()
                self._dirty, self._synced = False, now
            if not stopping:
                self._pruner.run(self._db)
        except Unavailable as exc:
            log.warning("store housekeeping failed: %s", exc)
