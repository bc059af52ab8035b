"""This process's presence in Redis: its own record of its members, and the thread that keeps them alive.

Each room's presence lives in Redis as a hash of every process's members
(``<pid>/<member>`` -> key and name) and a sorted set of each process's
liveness deadline, ``PRESENCE_TTL`` ahead; the ``Keeper`` thread renews every
room's deadline each third of the TTL, ``CHUNK`` rooms per pipeline, so the
members of a process that dies leave within the TTL (the next join or leave
in the room sweeps them).  A renewal also renews the room's expiry once a
tenth of it has passed.  When a renewal finds this process's record gone
(Redis lost its data, or swept the process after an outage longer than the
TTL), the keeper writes it again from ``Record``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from . import keys

#: Whatever a command can raise when Redis (or a cluster's node) fails.
FAILURES = (redis.RedisError, RedisClusterException)

log = logging.getLogger(__name__)

#: Rooms renewed (or restored) per pipeline.
CHUNK = 100


class Record:
    """What this process knows of its own members, per room; guarded by its own lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[str, dict[str, tuple[str, str]]] = {}
        self._lost: set[str] = set()

    def add(self, room: str, member: str, key: str, name: str) -> None:
        """Remember a member of room."""
        with self._lock:
            self._members.setdefault(room, {})[member] = (key, name)

    def remove(self, room: str, member: str) -> bool:
        """Forget a member of room; return whether it was there."""
        with self._lock:
            members = self._members.get(room)
            if members is None:
                return False
            known = members.pop(member, None) is not None
            if not members:
                del self._members[room]
            return known

    def lost(self, room: str) -> None:
        """Mark room as needing its members written again."""
        with self._lock:
            self._lost.add(room)

    def rooms(self) -> list[str]:
        """Return the rooms this process has members in."""
        with self._lock:
            return list(self._members)

    def take_lost(self) -> set[str]:
        """Return, and forget, the rooms marked lost."""
        with self._lock:
            lost, self._lost = self._lost, set()
            return lost

    def members(self, room: str) -> dict[str, tuple[str, str]]:
        """Return a copy of room's members: member -> (key, name)."""
        with self._lock:
            return dict(self._members.get(room, {}))

    def clear(self) -> list[str]:
        """Forget everything; return the rooms there were."""
        with self._lock:
            rooms = list(self._members)
            self._members.clear()
            return rooms


class Keeper(threading.Thread):
    """Renew this process's presence in every room it has members in, and restore what Redis lost."""

    def __init__(self, client: Any, scripts: dict[str, Any], record: Record, pid: str, settings: dict[str, Any]):
        super().__init__(name="chat-redis-presence", daemon=True)
        self.client, self.scripts, self.record, self.pid = client, scripts, record, pid
        self.ttl_ms = max(1, int(settings["PRESENCE_TTL"] * 1000))
        self.expiry_ms = max(1, int(settings["ROOM_EXPIRY"] * 1000))
        self.every = settings["PRESENCE_TTL"] / 3
        self.stopping = threading.Event()
        #: Set to renew (and restore) now rather than at the next beat.
        self.nudge = threading.Event()

    def run(self) -> None:
        while True:
            self.nudge.wait(self.every)
            self.nudge.clear()
            if self.stopping.is_set():
                return
            try:
                self.renew()
            except FAILURES as exc:
                log.warning("could not renew presence: %s", exc)

    def renew(self) -> None:
        """Renew every room's liveness, then write again the rooms whose record is gone."""
        rooms = self.record.rooms()
        lost = self.record.take_lost()
        try:
            renewed = self.each(rooms, lambda room, client: self.scripts["renew"](
                keys=[keys.meta(room), keys.log(room), *keys.presence(room), *keys.folds(room)],
                args=[self.pid, self.ttl_ms, self.expiry_ms],
                client=client,
            ))
            lost.update(room for room, ok in zip(rooms, renewed, strict=True) if not ok)
            if lost:
                self.restore(lost)
        except FAILURES:
            for room in lost:
                self.record.lost(room)
            raise

    def restore(self, rooms: set[str]) -> None:
        """Write the members of rooms as this process knows them."""

        def write(room: str, client: Any) -> Any:
            args: list[Any] = [self.pid, self.ttl_ms, self.expiry_ms]
            for member, (key, name) in self.record.members(room).items():
                args += [member, key, name]
            return self.scripts["restore"](
                keys=[keys.meta(room), keys.log(room), *keys.presence(room), *keys.folds(room)],
                args=args, client=client,
            )

        self.each(list(rooms), write)
        log.info("restored this process's presence in %d rooms", len(rooms))

    def each(self, rooms: list[str], call: Any) -> list[Any]:
        """Run call(room, client) for every room: pipelined by CHUNK on one server, one by one on a cluster."""
        if isinstance(self.client, RedisCluster):
            # A cluster pipeline cannot carry scripts.
            return [call(room, self.client) for room in rooms]
        replies: list[Any] = []
        # Chunks, so that packing and parsing thousands of calls never holds up delivery for long.
        for start in range(0, len(rooms), CHUNK):
            with self.client.pipeline(transaction=False) as pipe:
                for room in rooms[start:start + CHUNK]:
                    call(room, pipe)
                replies.extend(pipe.execute())
        return replies

    def stop(self) -> None:
        """Stop renewing and join the thread."""
        self.stopping.set()
        self.nudge.set()
        if self.is_alive():
            self.join(timeout=5)
