"""The net under the readers: a thread that checks, every ``EVERY`` seconds, that each watched room is served.

Each round costs a handful of commands whatever the number of rooms: one
``CLUSTER SLOTS`` (the cluster's own word on who owns each slot, compared
with the node each room is read from), and one ``CLIENT LIST TYPE pubsub``
per node read from, whose ``ssub`` for this process's reader says how many
shard subscriptions the node holds for it.  A room read from a node that
no longer owns its slot, or a node holding fewer subscriptions than its
reader has confirmed twice in a row with nothing changed between (a
subscription is being made or dropped at any moment), is subscribed again
and caught up (``Subscriber.relocate``); the reader's own pings find a
connection that stopped answering.  So a silent subscription lasts at most
about two rounds.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.exceptions import RedisClusterException

from .node import NodeReader
from .subscriber import Subscriber

log = logging.getLogger(__name__)

#: Seconds between two rounds of the check.
EVERY = 2.0


class Check(threading.Thread):
    """Check every EVERY seconds that each watched room is subscribed on its owner; repair it when not."""

    def __init__(self, subscriber: Subscriber, reader_name: str) -> None:
        super().__init__(name="chat-redis-check", daemon=True)
        self.subscriber = subscriber
        self.reader_name = reader_name
        #: For each node whose count fell short: the reader's count of changes when it did.
        self._short: dict[str, int] = {}

    def run(self) -> None:
        stop = self.subscriber.stopping
        while not stop.wait(EVERY):
            try:
                self.round()
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                log.debug("redis check: %s", exc)

    def round(self) -> None:
        """Check once: owners first, then what each node holds for its reader."""
        subscriber = self.subscriber
        owners = subscriber.topology.owners()
        if owners is not None:
            stale = [room for room, watch in subscriber.rooms().items() if owners(watch.slot) not in (None, watch.node)]
            if stale:
                subscriber.relocate(stale, "owner")
        for reader in subscriber.readers():
            self._count(reader)

    def _count(self, reader: NodeReader) -> None:
        changes, held = reader.changes, reader.held
        if not held or not reader.up:
            self._short.pop(reader.node_name, None)
            return
        client = self.subscriber.topology.client(reader.node_name)
        if client is None:
            return
        found = subscriptions(client.client_list(_type="pubsub"), self.reader_name)
        if found >= held or changes != reader.changes:
            self._short.pop(reader.node_name, None)
            return
        if self._short.get(reader.node_name) != changes:
            self._short[reader.node_name] = changes
            return
        del self._short[reader.node_name]
        log.warning("redis: %s holds %d of %d subscriptions of this process", reader.node_name, found, held)
        self.subscriber.relocate(self.subscriber.rooms_of(reader.node_name), "lost")


def subscriptions(clients: list[dict[str, Any]], name: str) -> int:
    """Return the shard subscriptions CLIENT LIST shows for the client named name (0 when it is not listed)."""
    return sum(int(client.get("ssub", 0)) for client in clients if client.get("name") == name)

