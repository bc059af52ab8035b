"""Redis Cluster as operators run it: a fresh start, slot migrations, failovers, a lost primary, a restarted node."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import redis
from conftest import wait_for
from redis_server import RedisCluster

from chat.backends import Item
from chat.backends import redis as redis_backend
from chat.backends.redis import check

SETTINGS = {"HISTORY_SIZE": 100, "PRESENCE_TTL": 5.0, "ROOM_EXPIRY": 3600.0}
ROOMS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


class Inbox:
    """What a backend delivered, room by room, with a condition to wait on."""

    def __init__(self) -> None:
        self.items: dict[str, list[Item]] = {}
        self.changed = threading.Condition()

    def deliver(self, room: str, items: list[Item]) -> None:
        with self.changed:
            self.items.setdefault(room, []).extend(items)
            self.changed.notify_all()

    def ids(self, room: str) -> list[int]:
        with self.changed:
            return [item.id for item in self.items.get(room, []) if item.id is not None]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"timed out waiting for {what}"


@pytest.fixture
def backends() -> Iterator[Callable[[str], tuple[redis_backend.RedisBackend, Inbox, list[str]]]]:
    """Start Redis backends (with an inbox and a list of repairs each), closed after the test."""
    made: list[redis_backend.RedisBackend] = []

    def make(url: str) -> tuple[redis_backend.RedisBackend, Inbox, list[str]]:
        repairs: list[str] = []
        backend = redis_backend.RedisBackend(url, SETTINGS, repairs.append)
        inbox = Inbox()
        backend.start(inbox.deliver)
        made.append(backend)
        return backend, inbox, repairs

    yield make
    for backend in made:
        backend.close()


def rooms_on_one_primary(cluster: RedisCluster, count: int) -> list[str]:
    """Return count rooms whose slots differ but are all served by the same primary."""
    by_node: dict[int, dict[int, str]] = {}
    for index in range(1000):
        room = f"room{index}"
        key = f"chat:{{{room}}}:live"
        by_node.setdefault(cluster.node_for(key).port, {}).setdefault(cluster.slot(key), room)
        best = max(by_node.values(), key=len)
        if len(best) >= count:
            return list(best.values())[:count]
    raise AssertionError("no primary serves enough rooms")


def test_rooms_of_one_primary_watched_at_once_all_deliver(redis_cluster, clean_cluster_url, backends):
    """Rooms in several slots of one primary, watched together, all deliver (one SSUBSCRIBE per slot, not one for
    all: a cluster refuses channels of several slots in one command with CROSSSLOT, the fresh-cluster failure)."""
    rooms = rooms_on_one_primary(redis_cluster, 4)
    reader, inbox, _ = backends(clean_cluster_url)
    writer, _, _ = backends(clean_cluster_url)
    start = threading.Barrier(len(rooms))

    def watch(room: str) -> None:
        start.wait()
        reader.watch(room)

    threads = [threading.Thread(target=watch, args=(room,), name=f"watch-{room}") for room in rooms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    published = {room: writer.publish(room, "w", f"to {room}").id for room in rooms}
    inbox.wait(lambda: all(published[room] in inbox.ids(room) for room in rooms), 10, "every room's message")
    assert reader.healthy()


def test_a_slot_map_refresh_leaves_every_room_live(redis_cluster, clean_cluster_url, backends):
    """After redis-py reads the slot map again (as any MOVED or lost connection makes it do), every watched room of
    a primary still delivers, live: the readers' connections are not the ones such a refresh reconnects."""
    rooms = rooms_on_one_primary(redis_cluster, 3)
    reader, inbox, _ = backends(clean_cluster_url)
    writer, _, _ = backends(clean_cluster_url)
    for room in rooms:
        reader.watch(room)
        first = writer.publish(room, "w", "first").id
        inbox.wait(lambda room=room, first=first: first in inbox.ids(room), 10, f"{room}'s first message")
    for _ in range(3):
        reader._client.nodes_manager.initialize()
        reader._client.ping(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    published = {room: writer.publish(room, "w", "second").id for room in rooms}
    inbox.wait(lambda: all(published[room] in inbox.ids(room) for room in rooms), 10, "every room's second message")


def test_a_reader_whose_connection_is_killed_subscribes_again_and_catches_up(
    redis_cluster, clean_cluster_url, backends,
):
    """A reader's connection killed on the node is made again, its rooms subscribed and caught up, and counted."""
    room = rooms_on_one_primary(redis_cluster, 1)[0]
    reader, inbox, repairs = backends(clean_cluster_url)
    writer, _, _ = backends(clean_cluster_url)
    reader.watch(room)
    first = writer.publish(room, "w", "first").id
    inbox.wait(lambda: first in inbox.ids(room), 10, "the first message")
    client = redis_cluster.client(redis_cluster.node_for(f"chat:{{{room}}}:live"))
    try:
        for entry in client.client_list(_type="pubsub"):
            if entry["name"] == f"chat-{reader._pid}-sub":
                client.client_kill_filter(_id=entry["id"])
    finally:
        client.close()
    second = writer.publish(room, "w", "second").id
    inbox.wait(lambda: second in inbox.ids(room), 10, "the second message, caught up")
    assert inbox.ids(room) == [first, second]
    wait_for(lambda: repairs == ["node"], 10, "the repair to be counted")


def test_the_check_counts_what_a_node_holds_for_this_process():
    """The check reads ssub of the reader's own connection from CLIENT LIST, and nobody else's."""
    listing = [{"name": "chat-a-sub", "ssub": "3"}, {"name": "chat-b-sub", "ssub": "5"}, {"name": "", "ssub": "1"}]
    assert check.subscriptions(listing, "chat-a-sub") == 3
    assert check.subscriptions(listing, "chat-c-sub") == 0
