"""The Redis backend: per-room streams for history, sharded pub/sub for live delivery.

Keys of a room R (``keys.py``; the braces keep them, and the channel, in one
cluster slot):

``chat:{R}:meta``
    Hash: ``seq``, the last chat id given out, ``epoch``, where ``seq``
    started, and ``tail``, the id of the stream's last entry.  The room's first
    message or presence event starts ``seq`` from Redis's clock in milliseconds
    times 1000 (or past the stream's last id), so ids keep growing when the
    keys expire or are lost, and a client that resumes with an older id is
    told that an unknown number of messages were missed.
``chat:{R}:log``
    Stream.  Chat message N has id ``N-0`` and the fields ``n`` (name), ``x``
    (text), ``ts`` and ``u`` (user id, or empty); a presence event made while
    the counter is N gets ``N-k`` (k >= 1) and the fields ``e`` (join or
    leave), ``m`` (member id), ``n`` and ``o`` (online count).  Publishing trims
    the stream to the last ``max(HISTORY_SIZE, RETAIN)`` chat messages.
``chat:{R}:live``
    Sharded pub/sub channel: each entry as the script appends it, with the id
    of the entry before it (``reader.py`` fills gaps from the stream); the
    chat messages of one group as one JSON array.
``chat:{R}:online``, ``:names``, ``:on``, ``:alive``
    Presence (``presence.py``): online counts connections per key (a user id,
    or a guest's member id), so a user in two tabs is one entry; names maps a
    key to its name; on maps ``<pid>/<member>`` to the member's key and name;
    alive holds each process's liveness deadline, which it renews.

Every script declares all its keys and runs in one slot, so the backend works
against one server and against a Redis Cluster (``redis+cluster://``) alike.
Every write gives the room's keys a TTL of ``ROOM_EXPIRY``, renewed while the
room is occupied.  Commands time out after ``TIMEOUT`` and are never retried
(a retried publish could store a message twice); one that cannot reach Redis
raises ``Unavailable``.  A process holds at most ``POOL`` connections and a
command waits up to ``POOL_WAIT`` for one, so a join storm queues instead of
being refused.  A room's messages published while its last group is on its
way go out together as the next group (``group.py``): one round trip per
group under load, none added when the room is idle.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, RedisClusterException
from redis.retry import Retry

from ... import protocol
from .. import Deliver, Entry, Item, Presence, Published, Replay, SignOut, Unavailable, resume
from . import keys, scripts
from .group import Groups, Message
from .presence import Keeper, Record
from .reader import ControlReader, StreamId, Subscriber, sid

log = logging.getLogger(__name__)

#: Seconds a command may take to connect, and then to answer.
TIMEOUT = 1.0
#: Connections one process may hold, and how long a command waits for a free one.
POOL, POOL_WAIT = 64, 5.0
#: Fewest chat messages a stream keeps, whatever HISTORY_SIZE says.
RETAIN = 1000
#: Most presence events kept after one chat message.
PRESENCE_BACKLOG = 1000
UNREACHABLE = (
    redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OutOfMemoryError, ClusterDownError, RedisClusterException,
)
CLUSTER_SCHEME = "redis+cluster://"


def connect(url: str, client_name: str) -> Any:
    """Return a client for a redis://, rediss://, unix:// or redis+cluster://host:port,... URL."""
    options: dict[str, Any] = {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
    }
    if url.startswith(CLUSTER_SCHEME):
        nodes = []
        for address in urlsplit(url).netloc.split(","):
            host, _, port = address.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(
            startup_nodes=nodes, connection_pool_class=partial(redis.BlockingConnectionPool, timeout=POOL_WAIT),
            max_connections=POOL, **options,
        )
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=POOL_WAIT, **options)
    return redis.Redis(connection_pool=pool)


class RedisBackend:
    """Share rooms between processes and hosts through Redis (one server or a cluster)."""

    def __init__(self, url: str, settings: dict[str, Any]) -> None:
        self._url = url
        self._settings = settings
        self._size: int = settings["HISTORY_SIZE"]
        self._keep = max(self._size, RETAIN)
        self._ttl_ms = max(1, int(settings["PRESENCE_TTL"] * 1000))
        self._expiry_ms = max(1, int(settings["ROOM_EXPIRY"] * 1000))
        self._list_limit = int(settings.get("PRESENCE_LIST_LIMIT", 200))
        self._lock = threading.Lock()
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._pid = ""
        self._record = Record()
        self._subscriber: Subscriber | None = None
        self._keeper: Keeper | None = None
        self._control: ControlReader | None = None
        self._closed = False
        self._up = True
        self._next_check = 0.0
        self._groups = Groups(self._send, POOL_WAIT + 2 * TIMEOUT)

    # Connections, made on first use so that nothing happens before gunicorn forks.

    def _redis(self) -> Any:
        with self._lock:
            if self._closed:
                raise Unavailable("the redis backend is closed")
            if self._client is None:
                self._pid = secrets.token_hex(8)
                client = connect(self._url, f"chat-{self._pid}")
                self._scripts = scripts.register(client)
                self._client = client
            return self._client

    @contextmanager
    def _reach(self) -> Iterator[None]:
        try:
            yield
        except UNREACHABLE as exc:
            # A command that timed out waiting for its answer may have run.
            raise Unavailable(f"redis is unreachable: {exc}", isinstance(exc, redis.TimeoutError)) from exc

    def _node_of(self, room: str) -> tuple[str, Any]:
        client = self._client
        if isinstance(client, RedisCluster):
            node = client.get_node_from_key(keys.channel(room))
            return node.name, client.get_redis_connection(node)
        return "main", client

    # The interface.

    def start(self, deliver: Deliver, on_signout: SignOut | None = None) -> None:
        """Start delivering every watched room's events and sign-outs, and renewing this process's presence."""
        client = self._redis()
        with self._lock:
            if self._subscriber is not None or self._closed:
                return
            self._subscriber = Subscriber(client, deliver, self._item, self._node_of)
            self._keeper = Keeper(client, self._scripts, self._record, self._pid, self._settings)
            self._keeper.start()
            if on_signout is not None:
                node = client
                if isinstance(client, RedisCluster):
                    node = client.get_redis_connection(client.get_default_node())
                self._control = ControlReader(node, on_signout, self._subscriber.stopping)
                self._control.start()

    def sign_out(self, user: str) -> None:
        """Tell every process sharing this Redis to close the connections of user."""
        client = self._redis()
        with self._reach():
            client.publish(keys.CONTROL, json.dumps({"signout": user}))

    def publish(self, room: str, name: str, text: str, user: str | None = None) -> Published:
        """Store a chat message under the room's next id and return the id and the ts its frame carries."""
        self._redis()
        return self._groups.publish(room, (name, text, time.time_ns() // 1_000_000, user or ""))

    def _send(self, room: str, messages: list[Message]) -> list[int]:
        """Store a group of room's chat messages under its next ids, in one script call, and return the ids."""
        client = self._redis()
        args: list[Any] = [self._keep, self._expiry_ms]
        for message in messages:
            args.extend(message)
        with self._reach():
            raw = self._scripts["publish"](
                keys=[keys.meta(room), keys.log(room), keys.channel(room)], args=args, client=client,
            )
        return [int(value) for value in raw]

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""
        client = self._redis()
        with self._reach():
            reply = self._scripts["history"](
                keys=[keys.meta(room), keys.log(room)],
                args=["" if since is None else since, limit, self._size],
                client=client,
            )
        return self._replay(room, since, reply)

    def enter(
        self, room: str, member: str, name: str, since: int | None, limit: int, user: str | None = None
    ) -> Entry:
        """Join room's presence and start delivering it here; return the replay and who is online, in one call."""
        client = self._redis()
        key = presence_key(member, user)
        try:
            with self._reach():
                tail, (online, names), reply, known = self._scripts["enter"](
                    keys=[keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room)],
                    args=[
                        self._pid, member, key, name, self._ttl_ms, self._expiry_ms, PRESENCE_BACKLOG,
                        "" if since is None else since, limit, self._size, self._list_limit,
                    ],
                    client=client,
                )
        except Unavailable:
            self._record.lost(room)
            raise
        # Recorded once Redis has it, so that a restore never writes a member before its own join does.
        others = self._record.members(room)
        self._record.add(room, member, key, name)
        if not known and others and self._keeper is not None:
            # This process had been swept from the room (after an outage longer than the TTL).
            self._record.lost(room)
            self._keeper.nudge.set()
        if self._subscriber is not None:
            self._subscriber.watch(room, sid(tail))
        users = sorted(value.decode() for value in names)
        return Entry(self._replay(room, since, reply), int(online), users, sid(tail))

    def exit(self, room: str, member: str) -> int:
        """Stop delivering room here (for this member), leave its presence, and return how many are online."""
        if self._record.remove(room, member) and self._subscriber is not None:
            self._subscriber.unwatch(room)
        client = self._redis()
        try:
            with self._reach():
                return int(self._scripts["leave"](
                    keys=[keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room)],
                    args=[self._pid, member, PRESENCE_BACKLOG, self._expiry_ms],
                    client=client,
                ))
        except Unavailable:
            self._record.lost(room)
            raise

    def watch(self, room: str) -> None:
        """Deliver every event of room added from now on, without joining its presence."""
        client = self._redis()
        if self._subscriber is None:
            raise Unavailable("the redis backend is not started")
        with self._reach():
            tail = client.hget(keys.meta(room), "tail")
        self._subscriber.watch(room, sid(tail or b"0-0"))

    def unwatch(self, room: str) -> None:
        """Undo one watch() of room."""
        if self._subscriber is not None:
            self._subscriber.unwatch(room)

    def presence(self, room: str) -> tuple[int, list[str]]:
        """Return how many are online in room and (at most the list limit of) their names."""
        client = self._redis()
        with self._reach():
            count, values = self._scripts["users"](
                keys=[keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room)],
                args=[PRESENCE_BACKLOG, self._list_limit],
                client=client,
            )
        return int(count), sorted(value.decode() for value in values)

    def users(self, room: str) -> list[str]:
        """Return (at most the list limit of) the names online in room."""
        return self.presence(room)[1]

    def healthy(self) -> bool:
        """Tell whether Redis answers this process's readers (with no reader: a ping, at most once a second)."""
        if self._closed:
            return False
        subscriber = self._subscriber
        if subscriber is not None and subscriber.reading():
            return subscriber.healthy()
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 1.0
            try:
                self._up = bool(self._redis().ping())
            except (Unavailable, *UNREACHABLE):
                self._up = False
        return self._up

    def close(self) -> None:
        """Stop and join the threads, remove this process's presence and disconnect; later calls raise Unavailable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, subscriber, keeper = self._client, self._subscriber, self._keeper
        if subscriber is not None:
            subscriber.stop()
        if keeper is not None:
            keeper.stop()
        if self._control is not None:
            self._control.join(timeout=5)
        if client is None:
            return
        rooms = self._record.clear()
        try:
            # Members still here leave with the next sweep of each room.
            for room in rooms:
                self._scripts["depart"](keys=[keys.presence(room)[1]], args=[self._pid], client=client)
        except UNREACHABLE as exc:
            log.warning("could not remove this process's presence from redis: %s", exc)
        client.close()

    # Decoding.

    def _replay(self, room: str, since: int | None, reply: list[Any]) -> Replay:
        if reply[0] is None:
            if since is None:
                return Replay()
            seconds, micros = reply[1]
            now = int(seconds) * 1_000_000 + int(micros) // 1000 * 1000
            return Replay() if since >= now else Replay(gap=True, missed=None)
        last, epoch, first, entries = int(reply[0]), int(reply[1]), reply[2], reply[3]
        messages = []
        for raw, fields in entries:
            entry = sid(raw)
            if entry[1] == 0:
                item = self._item(room, entry, dict(zip(fields[::2], fields[1::2], strict=True)))
                if item is not None:
                    messages.append(item)
        if since is None:
            return Replay(messages, last=last)
        if first:
            ms, seq = sid(first[0][0])
            oldest = ms + (1 if seq else 0)
        else:
            oldest = last + 1
        return resume(messages, since, last, epoch, oldest)

    def _item(self, room: str, entry: StreamId, fields: dict[bytes, bytes]) -> Item | None:
        ms, seq = entry
        if seq:
            event, name, online = fields[b"e"].decode(), fields[b"n"].decode(), int(fields[b"o"])
            said = Presence(event, fields.get(b"m", b"").decode(), name, online)
            return Item(None, protocol.presence(event, room, name, online), said, entry)
        user = fields.get(b"u") or None
        payload = protocol.chat(
            ms, room, fields[b"n"].decode(), fields[b"x"].decode(), int(fields[b"ts"]), user and user.decode(),
        )
        return Item(ms, payload, None, entry)


def presence_key(member: str, user: str | None) -> str:
    """Return what presence counts a connection as: its user, or (a guest) itself."""
    return f"u:{user}" if user else f"m:{member}"
