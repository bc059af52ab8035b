"""The Redis backend's reading side: each watched room's entries, in order and once.

Live entries arrive on the room's sharded pub/sub channel (a group of chat
messages as one channel message), each with the id of the entry before it;
the stream fills every gap (a subscription just made, a reconnect, a message
missed).  So a process's cost per delivered message does not depend on how
many rooms it watches.

A ``Subscriber`` owns the watched rooms (``_rooms``, under ``_lock``): how
many local clients watch each, and the id of the last entry delivered.
Connection threads change the counts; one ``NodeReader`` thread per Redis
node (one for a single server, one per primary in a cluster) owns that
node's subscription, advances the positions of its rooms and delivers them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from .. import Deliver, Item
from . import keys

log = logging.getLogger(__name__)

StreamId = tuple[int, int]
#: One entry from a room's channel: the id of the entry before it, its id, its fields.
Live = tuple[StreamId, StreamId, dict[bytes, bytes]]
Parse = Callable[[str, StreamId, dict[bytes, bytes]], Item | None]
#: Seconds a node reader waits for a message before it looks at its requests.
POLL = 0.05
#: Entries read from a stream per catch-up command.
CATCH_UP = 1000
#: A subscribed reader pings its node this often, and gives up on it after PING_WAIT without a pong
#: (a frozen server keeps the connection open but answers nothing).
PING_EVERY, PING_WAIT = 1.0, 2.0
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0


def sid(raw: bytes | str) -> StreamId:
    """Parse a stream id."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def live(body: dict[str, Any]) -> Live:
    """Return the id before, the id and the fields of one entry as the channel carries it."""
    prev, entry = sid(body.pop("p")), sid(body.pop("i"))
    return prev, entry, {key.encode(): str(value).encode() for key, value in body.items()}


@dataclass(eq=False)
class Watch:
    """One watched room: its local clients, the node serving it, and the last entry delivered."""

    count: int
    node: str
    position: StreamId


class Subscriber:
    """Deliver every entry of the watched rooms, through one reader thread per Redis node."""

    def __init__(self, client: Any, deliver: Deliver, parse: Parse, node_of: Callable[[str], tuple[str, Any]]):
        self._client = client
        self._deliver = deliver
        self._parse = parse
        self._node_of = node_of
        self._lock = threading.Lock()
        self._rooms: dict[str, Watch] = {}
        self._readers: dict[str, NodeReader] = {}
        self._stop = threading.Event()

    def watch(self, room: str, position: StreamId) -> None:
        """Count one more local client in room, delivering entries after position if it is newly watched."""
        name, node = self._node_of(room)
        with self._lock:
            if self._stop.is_set():
                return
            watch = self._rooms.get(room)
            if watch is not None:
                watch.count += 1
                return
            self._rooms[room] = Watch(1, name, position)
            reader = self._readers.get(name)
            if reader is None:
                reader = self._readers[name] = NodeReader(self, name, node)
                reader.start()
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

    def rooms_of(self, node: str) -> dict[str, Watch]:
        """Return the watched rooms served by node."""
        with self._lock:
            return {room: watch for room, watch in self._rooms.items() if watch.node == node}

    def reading(self) -> bool:
        """Tell whether any node reader has been started."""
        with self._lock:
            return bool(self._readers)

    def healthy(self) -> bool:
        """Tell whether every node reader is connected and alive."""
        with self._lock:
            readers = list(self._readers.values())
        return all(reader.up and reader.is_alive() for reader in readers)

    def stop(self) -> None:
        """Stop and join every node reader."""
        with self._lock:
            self._stop.set()
            readers = list(self._readers.values())
        for reader in readers:
            reader.changed.set()
        for reader in readers:
            reader.join(timeout=5)

    # On a node reader's thread.

    def arrived(self, room: str, watch: Watch, entries: list[Live]) -> None:
        """Deliver live entries (in order, each with the id before it), first filling the gap before them if any."""
        fresh = [live for live in entries if live[1] > watch.position]
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
        fresh = [(entry, fields) for entry, fields in entries if entry > watch.position]
        if not fresh:
            return
        watch.position = fresh[-1][0]
        with self._lock:
            current = self._rooms.get(room) is watch
        if not current:
            return
        items = []
        for entry, fields in fresh:
            try:
                item = self._parse(room, entry, fields)
            except (KeyError, ValueError) as exc:
                log.warning("room %s: skipping malformed stream entry %s: %r", room, entry, exc)
                continue
            if item is not None:
                items.append(item)
        if items:
            try:
                self._deliver(room, items)
            except Exception:
                log.exception("delivering %d events of room %s failed", len(items), room)

    @property
    def stopping(self) -> threading.Event:
        """Return the event that is set once the subscriber stops."""
        return self._stop


class NodeReader(threading.Thread):
    """Hold one Redis node's sharded subscriptions, and deliver what arrives on them."""

    def __init__(self, subscriber: Subscriber, name: str, node: Any) -> None:
        super().__init__(name=f"chat-redis-reader-{name}", daemon=True)
        self.subscriber = subscriber
        self.node = node
        self.node_name = name
        self.changed = threading.Event()
        self.up = True
        self._pubsub: Any = None
        #: The rooms subscribed, each with the watch it was caught up for.
        self._synced: dict[str, Watch] = {}
        self._next_ping = 0.0
        self._pinged: float | None = None
        #: Rooms subscribed whose catch-up from the stream is still to be done.
        self._fresh: dict[str, Watch] = {}

    def run(self) -> None:
        delay = BACKOFF_MIN
        stop = self.subscriber.stopping
        while not stop.is_set():
            try:
                if self._pubsub is None:
                    self._pubsub = self.node.pubsub(ignore_subscribe_messages=True)
                    self._synced = {}
                    self._pinged = None
                    self.changed.set()
                if self.changed.is_set():
                    self.changed.clear()
                    self._subscribe()
                    self._back()
                    self._catch_up()
                self._read()
            except (redis.RedisError, RedisClusterException) as exc:
                if stop.is_set():
                    break
                if self.up:
                    log.warning("redis reader of %s lost its connection: %s", self.node_name, exc)
                self.up = False
                self._drop()
                stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                self._back()
                delay = BACKOFF_MIN
        self._drop()

    def _back(self) -> None:
        if not self.up:
            log.info("redis reader of %s is back", self.node_name)
        self.up = True

    def _drop(self) -> None:
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except redis.RedisError:
                pass
            self._pubsub = None

    def _subscribe(self) -> None:
        """Subscribe to the rooms newly watched on this node, and drop the others."""
        wanted = self.subscriber.rooms_of(self.node_name)
        gone = [room for room in self._synced if room not in wanted]
        if gone:
            self._pubsub.sunsubscribe(*[keys.channel(room) for room in gone])
            for room in gone:
                del self._synced[room]
        self._fresh = {room: watch for room, watch in wanted.items() if self._synced.get(room) is not watch}
        new_channels = [keys.channel(room) for room in self._fresh if room not in self._synced]
        if new_channels:
            self._pubsub.ssubscribe(*new_channels)
            self._confirmed()

    def _confirmed(self) -> None:
        """Wait until the node has taken the subscriptions sent, so the catch-up read comes after them.

        A node answers one connection's commands in order: the pong to a ping
        sent after SSUBSCRIBE means the subscription holds.  Entries published
        before it are in the stream for the catch-up; those after, on the channel.
        """
        self._pubsub.ping()
        deadline = time.monotonic() + PING_WAIT
        while (left := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=left)
            if message is None:
                continue
            if message.get("type") == "pong":
                self._pinged = None
                return
            if message.get("type") == "smessage":
                self._arrived(message["channel"], message["data"])
        raise redis.TimeoutError(f"{self.node_name} did not confirm a subscription in {PING_WAIT} s")

    def _catch_up(self) -> None:
        """Deliver what was published in the newly watched rooms before their subscription took hold."""
        if self._fresh:
            self.subscriber.catch_up(self._fresh)
            self._synced.update(self._fresh)
            self._fresh = {}

    def _read(self) -> None:
        self._check_alive()
        message = self._pubsub.get_message(timeout=POLL)
        while message is not None:
            kind = message.get("type")
            if kind == "smessage":
                self._arrived(message["channel"], message["data"])
            elif kind == "pong":
                self._pinged = None
            if self.changed.is_set():
                return
            message = self._pubsub.get_message(timeout=0)

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
        room = channel.decode()[len("chat:{"):-len("}:live")]
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


class ControlReader(threading.Thread):
    """Receive what one process tells every other (a user signed out), on a plain pub/sub channel.

    Plain pub/sub reaches every subscriber in a cluster whichever node they
    listen on; these messages are rare and need no history.
    """

    def __init__(self, node: Any, on_signout: Callable[[str], None], stopping: threading.Event) -> None:
        super().__init__(name="chat-redis-control", daemon=True)
        self.node, self.on_signout, self.stopping = node, on_signout, stopping

    def run(self) -> None:
        delay = BACKOFF_MIN
        while not self.stopping.is_set():
            pubsub = None
            try:
                pubsub = self.node.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(keys.CONTROL)
                delay = BACKOFF_MIN
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=POLL * 10)
                    if message is not None and message.get("type") == "message":
                        self._arrived(message["data"])
            except (redis.RedisError, RedisClusterException) as exc:
                log.debug("control channel: %s", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except redis.RedisError:
                        pass

    def _arrived(self, data: bytes) -> None:
        try:
            user = json.loads(data)["signout"]
        except (ValueError, KeyError, TypeError):
            log.warning("skipping a malformed control message")
            return
        try:
            self.on_signout(str(user))
        except Exception:
            log.exception("signing out %s failed", user)
