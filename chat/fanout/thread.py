"""The fan-out thread: from the backend's events to every local connection's socket.

One ``Fanout`` per process owns the queues that backends and connections fill,
the wake pipe, the selector and its ``{fd: connection}`` map; only its thread
touches the selector and the map.  Backends call ``deliver`` (it only
enqueues).  A connection whose socket could not take everything calls
``watch``; one that starts closing calls ``closing``, so that its socket is
shut at the close deadline even if its reader sleeps; and one that ends calls
``release``, which returns once the selector has let go of its descriptor, so
the number cannot be reused while the selector still holds it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backends import Item
from ..socket.batch import Batch
from .coalescer import Coalescer

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..socket.connection import Connection

log = logging.getLogger(__name__)

#: Longest a connection waits for the fan-out thread to let go of its socket.
RELEASE_WAIT = 10.0


class Fanout:
    """Write every room's events to its local connections from one thread, never waiting on a socket."""

    def __init__(
        self, members: Callable[[str], list[Connection]], occupied: Callable[[str], bool], stats: Metrics,
        interval: float = 0.25, limit: int = 200,
    ) -> None:
        self._members = members
        self._occupied = occupied
        self._stats = stats
        self._limit = limit
        #: Owned by the fan-out thread.
        self._coalescer = Coalescer(interval, limit)
        self._lock = threading.Lock()
        self._work: list[tuple[str, list[Item]]] = []
        self._watch: list[Connection] = []
        self._closing: list[Connection] = []
        self._releases: list[tuple[Connection, threading.Event]] = []
        self._sleeping = False
        self._stop = False
        #: The thread has returned (or died): a flag, since is_alive() yields to gevent's hub on every call.
        self._ended = False
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._fds: dict[int, Connection] = {}

    # From any thread.

    def deliver(self, room: str, items: list[Item]) -> None:
        """Queue events for the local connections of room; backends call this in order."""
        self._hand_over(self._work, (room, items))

    def watch(self, conn: Connection) -> None:
        """Flush conn's outbox whenever its socket can take more, until it is empty."""
        self._hand_over(self._watch, conn)

    def closing(self, conn: Connection) -> None:
        """Shut conn's socket at its close deadline if it has not ended by then."""
        self._hand_over(self._closing, conn)

    def release(self, conn: Connection, timeout: float = RELEASE_WAIT) -> bool:
        """Wait until the selector no longer holds conn's socket; False if the fan-out did not answer."""
        thread = self._thread
        done = threading.Event()
        if thread is None or not self._hand_over(self._releases, (conn, done)):
            return True
        deadline = time.monotonic() + timeout
        while not done.wait(0.5):
            if not thread.is_alive() or time.monotonic() > deadline:
                log.error("the fan-out thread did not release the socket of %r", conn.remote)
                return False
        return True

    def _hand_over(self, queue: list, entry: Any) -> bool:
        """Queue entry for the fan-out thread and wake it; False once the thread has returned."""
        with self._lock:
            if self._ended:
                return False
            queue.append(entry)
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._poke()
        return True

    def _poke(self) -> None:
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except BlockingIOError:
                pass

    def start(self) -> None:
        """Start the fan-out thread (once; the caller serialises calls)."""
        if self._thread is not None:
            return
        self._wake = os.pipe()
        os.set_blocking(self._wake[0], False)
        os.set_blocking(self._wake[1], False)
        self._thread = threading.Thread(target=self._run, name="chat-fanout", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the fan-out thread once its queues are empty, and join it."""
        with self._lock:
            self._stop = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if not self._thread.is_alive() and self._wake is not None:
                for fd in self._wake:
                    os.close(fd)
                self._wake = None

    def alive(self) -> bool:
        """Tell whether the fan-out thread runs (or has not been needed yet)."""
        return self._thread is None or self._thread.is_alive()

    # The fan-out thread.

    def _run(self) -> None:
        assert self._wake is not None
        selector = selectors.DefaultSelector()
        selector.register(self._wake[0], selectors.EVENT_READ)
        # Weak: a connection that ended before its close deadline is not kept until then.
        deadlines: list[tuple[float, int, weakref.ref[Connection]]] = []
        order = itertools.count()
        try:
            while True:
                with self._lock:
                    idle = not (self._work or self._watch or self._closing or self._releases)
                    if idle and self._stop:
                        return
                    self._sleeping = idle
                timeout: float | None = 0
                if idle:
                    wake = [deadlines[0][0]] if deadlines else []
                    digest = self._coalescer.due()
                    if digest is not None:
                        wake.append(digest)
                    timeout = max(0.0, min(wake) - time.monotonic()) if wake else None
                for key, _ in selector.select(timeout):
                    if key.data is None:
                        self._drain_wake()
                    elif not key.data.flush():
                        self._unregister(selector, key.data)
                with self._lock:
                    self._sleeping = False
                    # Emptied in place: _hand_over holds references to these lists.
                    work, watch = self._work.copy(), self._watch.copy()
                    closing, releases = self._closing.copy(), self._releases.copy()
                    for queue in (self._work, self._watch, self._closing, self._releases):
                        queue.clear()
                for conn in closing:
                    heapq.heappush(deadlines, (conn.deadline, next(order), weakref.ref(conn)))
                for conn in watch:
                    self._guarded(selector, conn, self._register)
                if work:
                    self._fan_out(selector, work)
                for conn, done in releases:
                    try:
                        self._unregister(selector, conn)
                    finally:
                        done.set()
                now = time.monotonic()
                for room, item in self._coalescer.take(now):
                    self._fan_out_digest(selector, room, item)
                while deadlines and deadlines[0][0] <= now:
                    closing_conn = heapq.heappop(deadlines)[2]()
                    if closing_conn is not None:
                        closing_conn.expire()
        finally:
            with self._lock:
                self._ended = True
            selector.close()

    def _drain_wake(self) -> None:
        assert self._wake is not None
        try:
            while os.read(self._wake[0], 4096):
                pass
        except BlockingIOError:
            pass

    def _fan_out(self, selector: selectors.BaseSelector, work: list[tuple[str, list[Item]]]) -> None:
        by_room: dict[str, list[Item]] = {}
        for room, items in work:
            by_room.setdefault(room, []).extend(items)
        started = time.perf_counter()
        for room, items in by_room.items():
            # A room nobody here is in costs nothing: no frames, no digests.
            if not self._occupied(room):
                continue
            for item in items:
                if item.presence is not None:
                    self._coalescer.add(room, item.presence, item.at)
            batch = Batch.of(items, self._limit)
            # A big room's presence goes only into digests: its members are not copied for it.
            if batch.empty():
                continue
            recipients = self._members(room)
            if not recipients:
                continue
            self._deliver(selector, recipients, batch)
            self._stats.delivered(len(recipients) * len(items), len(recipients) * len(batch.frames[1]))
        self._stats.fanned_out(time.perf_counter() - started)

    def _fan_out_digest(self, selector: selectors.BaseSelector, room: str, item: Item) -> None:
        recipients = [conn for conn in self._members(room) if conn.version >= 2]
        if not recipients:
            return
        batch = Batch.digest(item)
        self._deliver(selector, recipients, batch)
        self._stats.delivered(len(recipients), len(recipients) * len(batch.frames[2]))

    def _guarded(self, selector: selectors.BaseSelector, conn: Connection, step: Callable, *args: Any) -> None:
        """Run one step for one connection; a failing one is closed, and the fan-out goes on."""
        try:
            step(selector, conn, *args)
        except Exception:
            self._failed(conn)

    def _deliver(self, selector: selectors.BaseSelector, recipients: list[Connection], batch: Batch) -> None:
        """Hand batch to each recipient; a failing one is closed, and the fan-out goes on."""
        # The innermost loop of the fan-out: no call per recipient beyond deliver() itself while all goes out.
        register = self._register
        for conn in recipients:
            try:
                if conn.deliver(batch):
                    register(selector, conn)
            except Exception:
                self._failed(conn)

    def _failed(self, conn: Connection) -> None:
        """Log the exception being handled and close conn with 1011."""
        log.exception("fan-out to %r failed: closing it", conn.remote)
        try:
            conn.close(1011, "internal error")
        except Exception:
            log.exception("closing %r failed", conn.remote)

    def _register(self, selector: selectors.BaseSelector, conn: Connection) -> None:
        fd = conn.fd
        held = self._fds.get(fd)
        if held is conn or not conn.backlogged():
            return
        if held is None:
            selector.register(fd, selectors.EVENT_WRITE, conn)
        else:
            # The previous owner of this number timed out waiting for its release.
            selector.modify(fd, selectors.EVENT_WRITE, conn)
        self._fds[fd] = conn

    def _unregister(self, selector: selectors.BaseSelector, conn: Connection) -> None:
        fd = conn.fd
        if self._fds.get(fd) is conn:
            selector.unregister(fd)
            del self._fds[fd]
