"""The Redis backend: per-room streams for history, sharded pub/sub for live delivery.

Each room's keys, and its channel, are laid out in ``keys.py`` (and its changed messages' in ``changes.py``): a
hash of counters, a stream of its history and a sharded pub/sub channel of what is added to it, all in one slot.

Every script declares all its keys and runs in one slot, so the backend works against one server and against a
Redis Cluster (``redis+cluster://``) alike; on a cluster, scripts follow the slots while they move (``follow.py``),
readers follow each room to its slot's owner (``subscriber.py``, ``node.py``), and a check makes sure none is left
silent (``check.py``).

Every write gives the room's keys a TTL of ``ROOM_EXPIRY``, renewed while the room is occupied.  Commands time out
after ``TIMEOUT`` and are retried only when they cannot have run (a retried publish could store a message twice);
one that cannot reach Redis raises ``Unavailable``.  A process holds at most
``POOL`` connections and a command waits up to ``POOL_WAIT`` for one, so a
join storm queues instead of being refused.  A room's messages published while its last group is on its way
go out together as the next group (``group.py``): one round trip per group under load, none added when idle.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from .. import Change, Changed, Control, Deliver, Entry, Published, Replay, SignOut, Unavailable
from . import changes, decode, follow, keys, scripts
from .check import Check
from .control import ControlReader, Teller
from .group import Groups, Message
from .presence import Keeper, Record
from .subscriber import Repaired, Subscriber
from .topology import MAIN, Topology

log = logging.getLogger(__name__)

#: Seconds a command may take to connect, and then to answer.
TIMEOUT = 1.0
#: Connections one process may hold, and how long a command waits for a free one.
POOL, POOL_WAIT = 64, 5.0
#: Fewest chat messages a stream keeps, whatever HISTORY_SIZE says.
RETAIN = 1000
#: Most presence events kept after one chat message.
PRESENCE_BACKLOG = 1000
UNREACHABLE = follow.UNREACHABLE
CLUSTER_SCHEME = "redis+cluster://"


def options(client_name: str) -> dict[str, Any]:
    """Return the options of every connection: timeouts, no retry, and the name Redis lists it under."""
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
    }


def connect(url: str, client_name: str) -> Any:
    """Return a client for a redis://, rediss://, unix:// or redis+cluster://host:port,... URL."""
    if url.startswith(CLUSTER_SCHEME):
        nodes = []
        for address in urlsplit(url).netloc.split(","):
            host, _, port = address.rpartition(":")
            nodes.append(ClusterNode(host or "127.0.0.1", int(port or 6379)))
        return RedisCluster(
            startup_nodes=nodes, connection_pool_class=partial(redis.BlockingConnectionPool, timeout=POOL_WAIT),
            max_connections=POOL, **options(client_name),
        )
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=POOL, timeout=POOL_WAIT, **options(client_name))
    return redis.Redis(connection_pool=pool)


class RedisBackend(Teller):
    """Share rooms between processes and hosts through Redis (one server or a cluster)."""

    def __init__(self, url: str, settings: dict[str, Any], repaired: Repaired | None = None) -> None:
        self._url = url
        self._settings = settings
        self._repaired = repaired
        self._size: int = settings["HISTORY_SIZE"]
        self._keep = max(self._size, RETAIN)
        self._ttl_ms = max(1, int(settings["PRESENCE_TTL"] * 1000))
        self._expiry_ms = max(1, int(settings["ROOM_EXPIRY"] * 1000))
        self._list_limit = int(settings.get("PRESENCE_LIST_LIMIT", 200))
        self._lock = threading.Lock()
        self._client: Any = None
        self._topology: Topology | None = None
        self._scripts: dict[str, Any] = {}
        self._pid = ""
        self._record = Record()
        self._subscriber: Subscriber | None = None
        self._keeper: Keeper | None = None
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._up = True
        self._next_check = 0.0
        self._groups = Groups(self._send, POOL_WAIT + 2 * TIMEOUT + follow.FOLLOW)

    # Connections, made on first use so that nothing happens before gunicorn forks.

    def _redis(self) -> Any:
        with self._lock:
            if self._closed:
                raise Unavailable("the redis backend is closed")
            if self._client is None:
                self._pid = secrets.token_hex(8)
                client = connect(self._url, f"chat-{self._pid}")
                self._scripts = scripts.register(client)
                self._topology = Topology(client, self._url, partial(options, self._reader_name()))
                self._client = client
            return self._client

    def _reader_name(self) -> str:
        return f"chat-{self._pid}-sub"

    def _run(self, call: Callable[[], Any]) -> Any:
        return follow.run(call, isinstance(self._client, RedisCluster))

    def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._redis()
        return self._run(lambda: self._scripts[name](keys=keys, args=args, client=client))

    # The interface.

    def start(self, deliver: Deliver, on_signout: SignOut | None = None, on_control: Control | None = None) -> None:
        """Start delivering every watched room's events and sign-outs, and renewing this process's presence."""
        client = self._redis()
        with self._lock:
            if self._subscriber is not None or self._closed:
                return
            assert self._topology is not None
            topology = self._topology
            self._subscriber = subscriber = Subscriber(client, topology, deliver, self._repaired)
            self._keeper = Keeper(client, self._scripts, self._record, self._pid, self._settings)
            self._keeper.start()
            self._threads.append(Check(subscriber, self._reader_name()))
            if on_signout is not None:
                def control() -> Any:
                    return topology.reader(client.get_random_node().name if topology.cluster else MAIN)

                self._threads.append(ControlReader(control, on_signout, subscriber.stopping, on_control))
            for thread in self._threads:
                thread.start()

    def publish(
        self, room: str, name: str, text: str, user: str | None = None, reply_to: int | None = None,
    ) -> Published:
        """Store a chat message under the room's next id and return the id and the ts its frame carries."""
        self._redis()
        return self._groups.publish(room, (name, text, time.time_ns() // 1_000_000, user or "", str(reply_to or "")))

    def change(self, room: str, change: Change, seed: str | None = None) -> Changed:
        """Apply a change to a message in one script (change.lua), which fans it out at the room's next id."""
        return changes.apply(self._script, room, change, seed, self._keep, self._expiry_ms)

    def look(self, room: str, message_id: int) -> str | None:
        """Return a message's state if Redis holds it, else None."""
        return changes.look(self._script, room, message_id)

    def _send(self, room: str, messages: list[Message]) -> list[int]:
        """Store a group of room's chat messages under its next ids, in one script call, and return the ids."""
        args: list[Any] = [self._keep, self._expiry_ms]
        for message in messages:
            args.extend(message)
        raw = self._script("publish", [keys.meta(room), keys.log(room), keys.channel(room), *keys.folds(room)], args)
        return [int(value) for value in raw]

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""
        reply = self._script(
            "history", [keys.meta(room), keys.log(room), keys.states(room)],
            ["" if since is None else since, limit, self._size],
        )
        return decode.replay(room, since, reply)

    def enter(
        self, room: str, member: str, name: str, since: int | None, limit: int, user: str | None = None
    ) -> Entry:
        """Join room's presence and start delivering it here; return the replay and who is online, in one call."""
        key = presence_key(member, user)
        self._redis()  # The arguments carry this process's pid, made on first use.
        try:
            tail, (online, names), reply, known = self._script(
                "enter",
                [keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room), *keys.folds(room)],
                [
                    self._pid, member, key, name, self._ttl_ms, self._expiry_ms, PRESENCE_BACKLOG,
                    "" if since is None else since, limit, self._size, self._list_limit,
                ],
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
            self._subscriber.watch(room, decode.sid(tail))
        users = sorted(value.decode() for value in names)
        return Entry(decode.replay(room, since, reply), int(online), users, decode.sid(tail))

    def exit(self, room: str, member: str) -> int:
        """Stop delivering room here (for this member), leave its presence, and return how many are online."""
        if self._record.remove(room, member) and self._subscriber is not None:
            self._subscriber.unwatch(room)
        self._redis()  # The arguments carry this process's pid, made on first use.
        try:
            return int(self._script(
                "leave",
                [keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room)],
                [self._pid, member, PRESENCE_BACKLOG, self._expiry_ms],
            ))
        except Unavailable:
            self._record.lost(room)
            raise

    def watch(self, room: str) -> None:
        """Deliver every event of room added from now on, without joining its presence."""
        client = self._redis()
        if self._subscriber is None:
            raise Unavailable("the redis backend is not started")
        tail = self._run(lambda: client.hget(keys.meta(room), "tail"))
        self._subscriber.watch(room, decode.sid(tail or b"0-0"))

    def unwatch(self, room: str) -> None:
        """Undo one watch() of room."""
        if self._subscriber is not None:
            self._subscriber.unwatch(room)

    def presence(self, room: str) -> tuple[int, list[str]]:
        """Return how many are online in room and (at most the list limit of) their names."""
        count, values = self._script(
            "users",
            [keys.meta(room), keys.log(room), keys.channel(room), *keys.presence(room)],
            [PRESENCE_BACKLOG, self._list_limit],
        )
        return int(count), sorted(value.decode() for value in values)

    def users(self, room: str) -> list[str]:
        """Return (at most the list limit of) the names online in room."""
        return self.presence(room)[1]

    def healthy(self) -> bool:
        """Tell whether every watched room's node answers its reader (with no reader: a ping, at most once a second)."""
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
        for thread in self._threads:
            thread.join(timeout=5)
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


def presence_key(member: str, user: str | None) -> str:
    """Return what presence counts a connection as: its user, or (a guest) itself."""
    return f"u:{user}" if user else f"m:{member}"
