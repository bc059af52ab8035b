"""Which node serves a room, and the cluster's own answer to it, refreshed when the cluster changes.

A single server is one node, ``main``.  On a cluster a room's channel (and
every key of it) lives on the primary that owns its slot: ``owner`` reads
redis-py's slot map, ``refresh`` has redis-py read the cluster's map again (at
most once per ``REFRESH_GAP``, however many readers ask at once), and
``owners`` asks the cluster itself (one ``CLUSTER SLOTS``) without touching
redis-py's connections, for the check.  A reader gets a client of its own
for its node (``reader``), with a pool of its own: redis-py's refresh marks
the connections of the node it asked for reconnection, and a pub/sub
connection reconnected underneath its reader would silently resubscribe (in
one ``SSUBSCRIBE`` for every slot, which a cluster refuses) with nothing
caught up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from . import keys

log = logging.getLogger(__name__)

#: The node name of a single server.
MAIN = "main"
#: Fewest seconds between two refreshes of redis-py's slot map.
REFRESH_GAP = 0.5


def slot(room: str) -> int:
    """Return the cluster slot of room's keys and channel."""
    return key_slot(keys.channel(room).encode())


class Topology:
    """Map rooms to the nodes that serve them, for one client (a single server or a cluster)."""

    def __init__(self, client: Any, url: str, options: Callable[[], dict[str, Any]]) -> None:
        self._client = client
        self._url = url
        self._options = options
        self.cluster = isinstance(client, RedisCluster)
        self._lock = threading.Lock()
        self._refreshed = 0.0

    def owner(self, room: str) -> str:
        """Return the name of the node that serves room, as far as this process knows."""
        if not self.cluster:
            return MAIN
        return self._client.get_node_from_key(keys.channel(room)).name

    def refresh(self) -> None:
        """Read the cluster's slot map again, unless it was read in the last REFRESH_GAP."""
        if not self.cluster:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._refreshed < REFRESH_GAP:
                return
            self._refreshed = now
        try:
            self._client.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException, OSError) as exc:
            log.warning("could not read the cluster's slot map: %s", exc)

    def reader(self, name: str) -> Any:
        """Return a client, with a connection pool of its own, for the node a reader subscribes on."""
        if not self.cluster:
            return redis.Redis.from_url(self._url, **self._options())
        host, _, port = name.rpartition(":")
        return redis.Redis(host=host, port=int(port), **self._options())

    def client(self, name: str) -> Any:
        """Return the shared client of node name for plain commands, or None when the cluster no longer lists it."""
        if not self.cluster:
            return self._client
        node = self._client.get_node(node_name=name)
        return None if node is None else self._client.get_redis_connection(node)

    def owners(self) -> Callable[[int], str | None] | None:
        """Ask the cluster which primary owns each slot now; return a lookup by slot (None on a single server)."""
        if not self.cluster:
            return None
        node = self._client.get_default_node()
        reply = self._client.get_redis_connection(node).execute_command("CLUSTER SLOTS")
        ranges = []
        for start, end, primary, *_ in reply:
            host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
            ranges.append((int(start), int(end), f"{host or node.host}:{int(primary[1])}"))

        def lookup(number: int) -> str | None:
            for start, end, name in ranges:
                if start <= number <= end:
                    return name
            return None

        return lookup
