"""Prometheus metrics of one process, gathered across workers when they share a directory.

No label takes a value a client chooses (a room name): prometheus_client's
multiprocess mode cannot remove a labelled series, so such a label would grow
the metric files with every room ever used.  Rooms are counted by size band.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Close codes counted by their number: the standard ones and the chat's own; a client's other choices are "other".
CODES = frozenset((*range(1000, 1016), 4401, 4403))
#: Upper bounds of the room size bands, in local connections.
BANDS = (1, 10, 100, 1000)


def band(size: int) -> str:
    """Return the label of the size band a room of size connections is in."""
    low = 1
    for high in BANDS:
        if size <= high:
            return str(high) if low == high else f"{low}-{high}"
        low = high + 1
    return f"{low}+"


class Metrics:
    """Count connections, messages, bytes, drops and closes."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.open = Gauge(
            "chat_connections", "Open WebSocket connections in rooms", registry=registry, multiprocess_mode="livesum",
        )
        self.rooms = Gauge(
            "chat_rooms", "Rooms with connections, by connections per worker", ["size"],
            registry=registry, multiprocess_mode="livesum",
        )
        self.messages_in = Counter("chat_messages_received", "Chat messages received from clients", registry=registry)
        self.bytes_in = Counter("chat_received_characters", "Characters of chat text received", registry=registry)
        self.deliveries = Counter("chat_deliveries", "Events delivered to connections", registry=registry)
        self.bytes_out = Counter("chat_sent_bytes", "Bytes of frames handed to sockets", registry=registry)
        self.events = Counter(
            "chat_events", "Slow-client closes and rate-limit hits", ["kind"], registry=registry
        )
        self.closes = Counter("chat_closes", "Closed connections by close code", ["code"], registry=registry)
        self.repairs = Counter(
            "chat_backend_repairs", "Watched rooms the backend subscribed again and caught up, by why", ["reason"],
            registry=registry,
        )
        self.fanout = Histogram(
            "chat_fanout_seconds", "Time to hand one batch to every local connection",
            registry=registry, buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
        )

    def room_resized(self, before: int, after: int) -> None:
        """Record that a room went from before to after connections here."""
        self.open.inc(after - before)
        if before and (not after or band(before) != band(after)):
            self.rooms.labels(band(before)).dec()
        if after and (not before or band(before) != band(after)):
            self.rooms.labels(band(after)).inc()

    def received(self, size: int) -> None:
        """Count one chat message from a client."""
        self.messages_in.inc()
        self.bytes_in.inc(size)

    def delivered(self, count: int, size: int) -> None:
        """Count events and bytes handed to connections."""
        self.deliveries.inc(count)
        self.bytes_out.inc(size)

    def fanned_out(self, seconds: float) -> None:
        """Record how long one fan-out round took."""
        self.fanout.observe(seconds)

    def count(self, kind: str) -> None:
        """Count one slow-client close or rate-limit hit."""
        self.events.labels(kind).inc()

    def repaired(self, reason: str) -> None:
        """Count a watched room the backend subscribed again, by why (moved, unsubscribed, node, owner, lost)."""
        self.repairs.labels(reason).inc()

    def closed(self, code: int) -> None:
        """Count a connection closed with code (a code outside CODES as "other", so clients cannot add series)."""
        self.closes.labels(str(code) if code in CODES else "other").inc()

    def render(self) -> bytes:
        """Return the metrics in Prometheus text format."""
        if self.directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.directory)
            return generate_latest(registry)
        return generate_latest(self.registry)
