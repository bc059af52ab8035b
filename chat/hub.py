"""The registry of this process's connections, and the fan-out thread that feeds them."""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import protocol, wire
from .backends import Backend, Item, Unavailable

if TYPE_CHECKING:
    from .connection import Connection
    from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Batch:
    """Events for one room, with their frames encoded once for every recipient."""

    items: list[Item]
    frame: bytes
    first_id: int | None
    last_id: int | None
    presence: bool

    @classmethod
    def of(cls, items: list[Item]) -> Batch:
        """Encode items as one run of frames."""
        ids = [message_id for message_id, _ in items if message_id is not None]
        return cls(
            items,
            b"".join([wire.text_frame(payload) for _, payload in items]),
            ids[0] if ids else None,
            ids[-1] if ids else None,
            len(ids) < len(items),
        )


class Hub:
    """Own the rooms of this process and deliver every event to their connections.

    One lock guards the rooms and the connection counts; another guards the
    queue that the backend fills and the fan-out thread drains.  The fan-out
    thread writes live batches to joined connections and is the only one that
    watches backlogged sockets.
    """

    def __init__(self, backend: Backend, settings: dict[str, Any], stats: Metrics) -> None:
        self.backend = backend
        self.settings = settings
        self.stats = stats
        self.limit: int = settings["MAX_CONNECTIONS"] or 1000
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rooms: dict[str, set[Connection]] = {}
        self._open = 0
        self._per_address: dict[str, int] = {}
        self._closing = False
        self._queue_lock = threading.Lock()
        self._queue: list[tuple[str, list[Item]]] = []
        self._requests: list[Connection] = []
        self._sleeping = False
        self._wake: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stop = False

    # Admission and membership, from connection threads.

    def admit(self, address: str) -> tuple[int, str] | None:
        """Reserve a place for a new connection, or return the close code and reason to refuse it."""
        with self._lock:
            if self._closing:
                return 1001, "server is shutting down"
            if self._open >= self.limit:
                return 1013, "server is full, try again later"
            if self._per_address.get(address, 0) >= self.settings["MAX_CONNECTIONS_PER_IP"]:
                return 1008, "too many connections from your address"
            self._open += 1
            self._per_address[address] = self._per_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """Give back the place that admit() reserved."""
        with self._lock:
            self._open -= 1
            self._changed.notify_all()
            left = self._per_address.get(address, 1) - 1
            if left:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    def join(self, conn: Connection, since: int | None) -> bool:
        """Add conn to its room, then send it the welcome and history; False if it is gone."""
        self.start()
        room = conn.room
        with self._lock:
            members = self._rooms.setdefault(room, set())
            members.add(conn)
            self.stats.room_resized(len(members) - 1, len(members))
        self.backend.watch(room)
        conn.watching = True
        replay = self.backend.replay(room, since, self.settings["HISTORY_REPLAY"])
        online = self.backend.join(room, conn.member, conn.name)
        # conn is held until its replay is written, so its own join event,
        # fanned out by join() above, waits and is dropped there.
        conn.skip = protocol.presence("join", room, conn.name, online)
        conn.present = True
        users = self.backend.users(room)
        payloads = [protocol.presence("welcome", room, conn.name, online, users)]
        if replay.gap:
            payloads.append(protocol.gap(room, replay.missed))
        payloads.extend(payload for _, payload in replay.messages)
        return conn.replay(payloads, replay.last)

    def leave(self, conn: Connection) -> None:
        """Remove conn from its room and tell the others."""
        room = conn.room
        with self._lock:
            members = self._rooms.get(room)
            if members is not None and conn in members:
                members.discard(conn)
                if not members:
                    del self._rooms[room]
                self.stats.room_resized(len(members) + 1, len(members))
        self._release_socket(conn)
        try:
            if conn.watching:
                conn.watching = False
                self.backend.unwatch(room)
            if conn.present:
                conn.present = False
                self.backend.leave(room, conn.member)
        except Unavailable:
            log.warning("backend unavailable: the leave of %s from %s is not announced", conn.name, room)

    def publish(self, conn: Connection, text: str) -> None:
        """Send a chat message from conn to its room."""
        self.stats.received(len(text))
        try:
            self.backend.publish(conn.room, conn.name, text)
        except Unavailable:
            conn.send(protocol.notice("unavailable", "the chat is unavailable: your message was not sent"))

    def connections(self) -> list[Connection]:
        """Return a snapshot of every connection in this process."""
        with self._lock:
            return [conn for members in self._rooms.values() for conn in members]

    def count(self) -> int:
        """Return how many connections this process holds."""
        with self._lock:
            return self._open

    # Fan-out, from the backend's delivering thread into the fan-out thread.

    def deliver(self, room: str, items: list[Item]) -> None:
        """Queue events for the local connections of room; never blocks on a socket.

        Backends call this in order, possibly under their own lock.
        """
        self._hand_over(self._queue, (room, items))

    def watch_backlog(self, conn: Connection) -> None:
        """Have the fan-out thread flush conn's outbox when its socket can take more."""
        self._hand_over(self._requests, conn)

    def _hand_over(self, queue: list, entry: object) -> None:
        """Append entry to one of the fan-out thread's queues, and wake it if it sleeps."""
        with self._queue_lock:
            queue.append(entry)
            wake, self._sleeping = self._sleeping, False
        if wake:
            self._poke()

    def _release_socket(self, conn: Connection) -> None:
        """Make sure the fan-out thread no longer watches conn's socket before it closes."""
        with conn.lock:
            conn.finished = True
            conn.outbox.clear()
            busy = conn.watched or conn.watch_requested
            if busy:
                released = conn.released = threading.Event()
        if busy:
            self.watch_backlog(conn)
            # The socket's number must not be reused while the selector holds it,
            # so wait for as long as the fan-out thread is there to answer.
            while not released.wait(1.0):
                if self._thread is None or not self._thread.is_alive():
                    break

    def _poke(self) -> None:
        if self._wake is not None:
            try:
                os.write(self._wake[1], b"x")
            except BlockingIOError:
                pass

    def start(self) -> None:
        """Start the fan-out thread and subscribe to the backend, once per process."""
        with self._lock:
            if self._thread is not None:
                return
            self._wake = os.pipe()
            os.set_blocking(self._wake[0], False)
            os.set_blocking(self._wake[1], False)
            self._thread = threading.Thread(target=self._run, name="chat-fanout", daemon=True)
            self._thread.start()
            # Under the lock, so no connection joins before the backend delivers.
            self.backend.start(self.deliver)

    def _run(self) -> None:
        assert self._wake is not None
        selector = selectors.DefaultSelector()
        selector.register(self._wake[0], selectors.EVENT_READ)
        try:
            while True:
                with self._queue_lock:
                    idle = not self._queue and not self._requests
                    if idle and self._stop:
                        return
                    self._sleeping = idle
                for key, _ in selector.select(None if idle else 0):
                    if key.data is None:
                        self._drain_wake()
                    elif not key.data.flush():
                        self._unwatch(selector, key.data)
                with self._queue_lock:
                    self._sleeping = False
                    # Emptied in place: _hand_over holds references to these lists.
                    work, requests = self._queue.copy(), self._requests.copy()
                    self._queue.clear()
                    self._requests.clear()
                for conn in requests:
                    try:
                        self._watch(selector, conn)
                    except Exception:
                        log.exception("watching %s failed: closing it", conn.remote)
                        conn.close(1011, "internal error")
                if work:
                    self._fan_out(selector, work)
        finally:
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
            with self._lock:
                members = self._rooms.get(room)
                recipients = list(members) if members else []
            if not recipients:
                continue
            batch = Batch.of(items)
            for conn in recipients:
                self._deliver_to(selector, conn, batch)
            self.stats.delivered(len(recipients) * len(items), len(recipients) * len(batch.frame))
        self.stats.fanned_out(time.perf_counter() - started)

    def _deliver_to(self, selector: selectors.BaseSelector, conn: Connection, batch: Batch) -> None:
        """Hand batch to one connection; a failing one is closed, and the fan-out goes on."""
        try:
            if conn.deliver(batch):
                self._watch(selector, conn)
        except Exception:
            log.exception("delivery to %s failed: closing it", conn.remote)
            with contextlib.suppress(Exception):
                conn.close(1011, "internal error")

    def _watch(self, selector: selectors.BaseSelector, conn: Connection) -> None:
        with conn.lock:
            conn.watch_requested = False
            if conn.finished:
                if conn.watched:
                    selector.unregister(conn.fd)
                    conn.watched = False
                if conn.released is not None:
                    conn.released.set()
                return
            if conn.watched or not conn.outbox:
                return
            selector.register(conn.fd, selectors.EVENT_WRITE, conn)
            conn.watched = True

    def _unwatch(self, selector: selectors.BaseSelector, conn: Connection) -> None:
        with conn.lock:
            if conn.watched and (conn.finished or not conn.outbox):
                selector.unregister(conn.fd)
                conn.watched = False
            if conn.finished and conn.released is not None:
                conn.released.set()

    # Shutdown.

    def shutdown(self, timeout: float) -> None:
        """Close every connection with 1001 after its outbox, wait for them, and stop the threads."""
        with self._lock:
            self._closing = True
        for conn in self.connections():
            conn.close(1001, "server is restarting")
        with self._changed:
            self._changed.wait_for(lambda: self._open == 0, timeout)
        self.stop()

    def stop(self) -> None:
        """Stop the fan-out thread and the backend, and join them."""
        with self._queue_lock:
            self._stop = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if not self._thread.is_alive() and self._wake is not None:
                for fd in self._wake:
                    os.close(fd)
                self._wake = None
        self.backend.close()

    def running(self) -> bool:
        """Tell whether the fan-out thread is alive (or not started yet)."""
        return self._thread is None or self._thread.is_alive()
