"""The Redis backend's reading side: each watched room's entries, in order and once, from whichever node serves it.

Live entries arrive on the room's sharded pub/sub channel (a group of chat
messages as one channel message), each with the id of the entry before it;
the stream fills every gap (a subscription just made or made again, a
reconnect, a message missed).  So a process's cost per delivered message
does not depend on how many rooms it watches.

A ``Subscriber`` owns the watched rooms (``_rooms``, under ``_lock``): for
each, a ``Watch`` with its local clients, the node serving it and the last
entry delivered.  One ``NodeReader`` thread per node (``node.py``) holds that
node's subscriptions and delivers its rooms.  When a room must be
subscribed again (its node ended the subscription, answered MOVED or went
away, or the check found it stale), ``relocate`` replaces its watch with a
new one on the room's current owner, carrying the position over under the
lock: the old watch delivers nothing more, and the new one's reader
subscribes, then catches up from the stream after that position, so
nothing is lost or delivered twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from redis.exceptions import RedisClusterException

from .. import Deliver, Item
from . import changes, keys
from .decode import Live, StreamId, item, sid
from .node import NodeReader, Watch
from .topology import Topology, slot

log = logging.getLogger(__name__)

#: Entries read from a stream per catch-up command.
CATCH_UP = 1000
#: Called with the reason each time a room was subscribed again and caught up.
Repaired = Callable[[str], None]


class Subscriber:
    """Deliver every entry of the watched rooms, through one reader thread per Redis node."""

    def __init__(self, client: Any, topology: Topology, deliver: Deliver, repaired: Repaired | None = None) -> None:
        self._client = client
        self.topology = topology
        self._deliver = deliver
        self._repaired = repaired
        self._lock = threading.Lock()
        self._rooms: dict[str, Watch] = {}
        self._readers: dict[str, NodeReader] = {}
        self._retired: list[NodeReader] = []
        self._stop = threading.Event()

    @property
    def stopping(self) -> threading.Event:
        """Return the event that is set once the subscriber stops."""
        return self._stop

    def watch(self, room: str, position: StreamId) -> None:
        """Count one more local client in room, delivering entries after position if it is newly watched."""
        node = self.topology.owner(room)
        with self._lock:
            if self._stop.is_set():
                return
            watch = self._rooms.get(room)
            if watch is not None:
                watch.count += 1
                return
            self._rooms[room] = Watch(1, node, position, slot(room))
            reader = self._reader_locked(node)
        reader.changed.set()

    def unwatch(self, room: str) -> None:
        """Count one local client fewer in room; stop reading it at zero."""
        with self._lock:
            watch = self._rooms.get(room)
            if watch is None:
                return
            watch.count -= 1
            if watch.count > 0:
                return
            del self._rooms[room]
            reader = self._readers.get(watch.node)
        if reader is not None:
            reader.changed.set()

    def relocate(self, rooms: Iterable[str], reason: str, moved_only: bool = False) -> None:
        """Have rooms subscribed again on the node that serves each now (with moved_only: only those that moved)."""
        self.topology.refresh()
        kicked: dict[str, NodeReader] = {}
        moved: dict[str, list[str]] = {}
        with self._lock:
            if self._stop.is_set():
                return
            for room in rooms:
                watch = self._rooms.get(room)
                if watch is None:
                    continue
                try:
                    node = self.topology.owner(room)
                except RedisClusterException:
                    # No node serves the slot yet: its reader keeps trying, and health says so.
                    node = watch.node
                if moved_only and node == watch.node:
                    continue
                self._rooms[room] = Watch(watch.count, node, watch.position, watch.slot, reason)
                moved.setdefault(node, []).append(room)
                for name in {watch.node, node}:
                    kicked[name] = self._reader_locked(name)
        for node, names in moved.items():
            log.warning(
                "redis: %d watched rooms (%s) subscribed again on %s: %s",
                len(names), ", ".join(sorted(names)[:5]), node, reason,
            )
        for reader in kicked.values():
            reader.changed.set()

    def rooms_of(self, node: str) -> dict[str, Watch]:
        """Return the watched rooms served by node."""
        with self._lock:
            return {room: watch for room, watch in self._rooms.items() if watch.node == node}

    def rooms(self) -> dict[str, Watch]:
        """Return every watched room."""
        with self._lock:
            return dict(self._rooms)

    def readers(self) -> list[NodeReader]:
        """Return the node readers running now."""
        with self._lock:
            return list(self._readers.values())

    def retire(self, reader: NodeReader) -> bool:
        """Let a reader whose node serves no watched room end; False if a room came to it meanwhile."""
        with self._lock:
            if any(watch.node == reader.node_name for watch in self._rooms.values()):
                return False
            if self._readers.get(reader.node_name) is reader:
                del self._readers[reader.node_name]
                self._retired.append(reader)
            return True

    def reading(self) -> bool:
        """Tell whether any node reader has been started."""
        with self._lock:
            return bool(self._readers) or bool(self._retired)

    def healthy(self) -> bool:
        """Tell whether the node of every watched room has a reader that is connected and alive."""
        with self._lock:
            serving = {watch.node for watch in self._rooms.values()}
            readers = [reader for name, reader in self._readers.items() if name in serving]
        return all(reader.up and reader.is_alive() for reader in readers)

    def repaired(self, room: str, reason: str) -> None:
        """Count a room subscribed again and caught up."""
        log.info("redis: room %s is live again (%s)", room, reason)
        if self._repaired is not None:
            self._repaired(reason)

    def stop(self) -> None:
        """Stop and join every node reader."""
        with self._lock:
            self._stop.set()
            readers = [*self._readers.values(), *self._retired]
        for reader in readers:
            reader.changed.set()
        for reader in readers:
            reader.join(timeout=5)

    def _reader_locked(self, node: str) -> NodeReader:
        reader = self._readers.get(node)
        if reader is None:
            reader = self._readers[node] = NodeReader(self, node, self.topology.reader)
            reader.start()
        return reader

    # On a node reader's thread.

    def arrived(self, room: str, watch: Watch, entries: list[Live]) -> None:
        """Deliver live entries (in order, each with the id before it), first filling the gap before them if any."""
        fresh = [entry for entry in entries if entry[1] > watch.position]
        expected = watch.position
        for prev, entry, _ in fresh:
            if prev != expected:
                self.catch_up({room: watch})
                return
            expected = entry
        if fresh:
            self._hand_on(room, watch, [(entry, fields) for _, entry, fields in fresh])

    def catch_up(self, rooms: dict[str, Watch]) -> None:
        """Deliver what the streams of rooms hold after each one's position."""
        pending = dict(rooms)
        while pending:
            with self._client.pipeline(transaction=False) as pipe:
                for room, watch in pending.items():
                    ms, seq = watch.position
                    pipe.xrange(keys.log(room), f"({ms}-{seq}", "+", count=CATCH_UP)
                replies = pipe.execute()
            more = {}
            for (room, watch), entries in zip(pending.items(), replies, strict=True):
                fresh = [(sid(raw), fields) for raw, fields in entries]
                if fresh:
                    self._hand_on(room, watch, fresh)
                if len(entries) == CATCH_UP:
                    more[room] = watch
            pending = more

    def _hand_on(self, room: str, watch: Watch, entries: list[tuple[StreamId, dict[bytes, bytes]]]) -> None:
        entries = changes.restore(self._client, room, watch.position, entries)
        fresh = [(entry, fields) for entry, fields in entries if entry > watch.position]
        items: list[tuple[StreamId, Item]] = []
        for entry, fields in fresh:
            try:
                parsed = item(room, entry, fields)
            except (KeyError, ValueError) as exc:
                log.warning("room %s: skipping malformed stream entry %s: %r", room, entry, exc)
                continue
            if parsed is not None:
                items.append((entry, parsed))
        if not fresh:
            return
        with self._lock:
            # Only the room's current watch delivers, and only past what was delivered: a watch replaced
            # meanwhile (the room followed to another node) hands its position to its successor under this lock.
            if self._rooms.get(room) is not watch:
                return
            position = watch.position
            watch.position = max(position, fresh[-1][0])
            due = [parsed for entry, parsed in items if entry > position]
            if due:
                try:
                    self._deliver(room, due)
                except Exception:
                    log.exception("delivering %d events of room %s failed", len(due), room)
