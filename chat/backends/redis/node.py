"""One node's sharded subscriptions, held by a thread that delivers what arrives on them.

A cluster takes an ``SSUBSCRIBE`` only for channels of one slot (several
slots in one command are refused with CROSSSLOT), so a reader subscribes
slot by slot, then waits for the pong of a ping sent after them: a node
answers one connection in order, so every subscription it accepted holds,
and each one it refused (MOVED, ASK: the node does not own the slot, or not
yet) is known by its slot and followed.  A node that ends a subscription by
itself (Redis 7 sends ``sunsubscribe`` when a slot leaves it) or goes away
has its rooms followed too (``Subscriber.relocate``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from redis.exceptions import AskError, RedisClusterException, ResponseError

from . import keys
from .decode import Live, StreamId, live

log = logging.getLogger(__name__)

#: Seconds a node reader waits for a message before it looks at its requests.
POLL = 0.05
#: A subscribed reader pings its node this often, and gives up on it after PING_WAIT without a pong
#: (a frozen server keeps the connection open but answers nothing).
PING_EVERY, PING_WAIT = 1.0, 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 1.0


@dataclass(eq=False)
class Watch:
    """One watched room: its local clients, the node serving it, the last entry delivered and its slot."""

    count: int
    node: str
    position: StreamId
    slot: int
    #: Why the room is subscribed again on this watch's node (None when it is newly watched).
    repair: str | None = None


class Rooms(Protocol):
    """What a node reader asks of the subscriber that owns the watched rooms."""

    @property
    def stopping(self) -> threading.Event: ...

    def rooms_of(self, node: str) -> dict[str, Watch]: ...

    def relocate(self, rooms: Iterable[str], reason: str, moved_only: bool = False) -> None: ...

    def retire(self, reader: NodeReader) -> bool: ...

    def catch_up(self, rooms: dict[str, Watch]) -> None: ...

    def arrived(self, room: str, watch: Watch, entries: list[Live]) -> None: ...

    def repaired(self, room: str, reason: str) -> None: ...


def room_of(channel: bytes) -> str:
    """Return the room whose live channel this is."""
    return channel.decode()[len("chat:{"):-len("}:live")]


class NodeReader(threading.Thread):
    """Hold one Redis node's sharded subscriptions, and deliver what arrives on them."""

    def __init__(self, subscriber: Rooms, name: str, connect: Callable[[str], Any]) -> None:
        super().__init__(name=f"chat-redis-reader-{name}", daemon=True)
        self.subscriber = subscriber
        self.node_name = name
        self._connect = connect
        self.changed = threading.Event()
        self.up = True
        #: How many subscriptions this reader holds, and a count of every change to them (for the check).
        self.held = 0
        self.changes = 0
        self._pubsub: Any = None
        #: The rooms subscribed, each with the watch it was caught up for.
        self._synced: dict[str, Watch] = {}
        #: Rooms whose subscription was lost, and why, until they are subscribed again.
        self._lost: dict[str, str] = {}
        #: Channels this reader asked to leave, whose sunsubscribe is expected.
        self._leaving: set[bytes] = set()
        self._next_ping = 0.0
        self._pinged: float | None = None

    def run(self) -> None:
        delay = BACKOFF_MIN
        stop = self.subscriber.stopping
        while not stop.is_set():
            try:
                if self._pubsub is None:
                    self._open()
                if self.changed.is_set():
                    self.changed.clear()
                    self._subscribe()
                self._read()
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                if stop.is_set():
                    break
                if self.up:
                    log.warning("redis reader of %s lost its connection: %s", self.node_name, exc)
                self.up = False
                self._drop("node")
                # A replica may have taken the node's place: rooms follow their slot's new owner.
                self.subscriber.relocate(self.subscriber.rooms_of(self.node_name), "node", moved_only=True)
                stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            delay = BACKOFF_MIN
            if not self._synced and not self.changed.is_set() and self.subscriber.retire(self):
                break
        self._drop("stopped")

    def _open(self) -> None:
        self._pubsub = self._connect(self.node_name).pubsub()
        self._synced = {}
        self._leaving = set()
        self._pinged = None
        self.held = 0
        self.changes += 1
        self.changed.set()

    def _drop(self, why: str) -> None:
        for room in self._synced:
            self._lost.setdefault(room, why)
        self._synced = {}
        self.held = 0
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except (redis.RedisError, OSError):
                pass
            self._pubsub = None

    def _subscribe(self) -> None:
        """Subscribe to the rooms newly served here (or whose watch was replaced), drop the others, catch up."""
        wanted = self.subscriber.rooms_of(self.node_name)
        gone = [room for room in self._synced if room not in wanted]
        for room in list(self._lost):
            if room not in wanted:
                del self._lost[room]
        if gone:
            for channels in by_slot({room: self._synced[room] for room in gone}).values():
                self._leaving.update(channel.encode() for channel in channels)
                self._pubsub.sunsubscribe(*channels)
            for room in gone:
                del self._synced[room]
            self.held -= len(gone)
            self.changes += 1
        fresh = {room: watch for room, watch in wanted.items() if self._synced.get(room) is not watch}
        if fresh:
            for channels in by_slot(fresh).values():
                self._pubsub.ssubscribe(*channels)
            refused = self._confirmed()
            taken = {room: watch for room, watch in fresh.items() if watch.slot not in refused}
            self.held += sum(1 for room in taken if room not in self._synced)
            self.changes += 1
            self._synced.update(taken)
            self._back()
            self.subscriber.catch_up(taken)
            for room, watch in taken.items():
                reason = watch.repair or self._lost.pop(room, None)
                self._lost.pop(room, None)
                if reason is not None:
                    self.subscriber.repaired(room, reason)
            if refused:
                moved = [room for room, watch in fresh.items() if watch.slot in refused]
                # The slot map may lag the cluster by a moment: do not ask again at once.
                self.subscriber.stopping.wait(BACKOFF_MIN)
                log.info("redis: %s refused %d slots: %s", self.node_name, len(refused), sorted(refused.items())[:3])
                self.subscriber.relocate(moved, "moved")
        elif not self._synced:
            self._back()

    def _confirmed(self) -> dict[int, str]:
        """Wait until the node has answered every subscription sent; return the slots it refused, with why.

        Entries published before a subscription holds are in the stream for
        the catch-up; those after it come on the channel.
        """
        self._pubsub.ping()
        refused: dict[int, str] = {}
        deadline = time.monotonic() + PING_WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self._pubsub.get_message(timeout=left)
            except ResponseError as exc:
                number = getattr(exc, "slot_id", None)
                if number is None:
                    raise
                refused[int(number)] = "ASK" if type(exc) is AskError else "MOVED"
                continue
            if message is None:
                continue
            if message["type"] == "pong":
                self._pinged = None
                return refused
            self._handle(message)
        raise redis.TimeoutError(f"{self.node_name} did not confirm a subscription in {PING_WAIT} s")

    def _back(self) -> None:
        if not self.up:
            log.info("redis reader of %s is back", self.node_name)
        self.up = True

    def _read(self) -> None:
        self._check_alive()
        message = self._pubsub.get_message(timeout=POLL)
        while message is not None:
            self._handle(message)
            if self.changed.is_set():
                return
            message = self._pubsub.get_message(timeout=0)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "smessage":
            self._arrived(message["channel"], message["data"])
        elif kind == "pong":
            self._pinged = None
        elif kind == "sunsubscribe":
            channel = message["channel"]
            if channel in self._leaving:
                self._leaving.discard(channel)
                return
            # Not asked for: the node no longer serves the slot.
            room = room_of(channel)
            if self._synced.pop(room, None) is not None:
                self.held -= 1
                self.changes += 1
                self._lost[room] = "unsubscribed"
            log.info("redis: %s ended the subscription of room %s", self.node_name, room)
            self.subscriber.relocate([room], "unsubscribed")

    def _check_alive(self) -> None:
        """Ping the node now and then; raise if the last ping went unanswered too long."""
        if not self._synced:
            return
        now = time.monotonic()
        if self._pinged is not None:
            if now - self._pinged > PING_WAIT:
                raise redis.TimeoutError(f"no answer from {self.node_name} in {PING_WAIT} s")
        elif now >= self._next_ping:
            self._pubsub.ping()
            self._pinged = now
            self._next_ping = now + PING_EVERY

    def _arrived(self, channel: bytes, data: bytes) -> None:
        room = room_of(channel)
        watch = self._synced.get(room)
        if watch is None:
            return
        try:
            body = json.loads(data)
            entries = [live(one) for one in (body if isinstance(body, list) else [body])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("room %s: skipping a malformed live entry: %r", room, exc)
            return
        self.subscriber.arrived(room, watch, entries)


def by_slot(rooms: dict[str, Watch]) -> dict[int, list[str]]:
    """Group the live channels of rooms by cluster slot."""
    groups: dict[int, list[str]] = defaultdict(list)
    for room, watch in rooms.items():
        groups[watch.slot].append(keys.channel(room))
    return groups
