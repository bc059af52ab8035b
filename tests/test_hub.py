"""The hub: admission, batches, and delivery order through the fan-out thread."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol

from chat import config
from chat.backends.memory import MemoryBackend
from chat.connection import Connection
from chat.hub import Batch, Hub
from chat.metrics import Metrics


def make_hub(**overrides) -> Hub:
    settings = config.load({}, {"MAX_CONNECTIONS": 3, "MAX_CONNECTIONS_PER_IP": 2, **overrides})
    return Hub(MemoryBackend(settings), settings, Metrics())


def test_admit_counts_the_limit_and_each_address():
    """Past the connection limit the answer is 1013; past the per-address limit 1008."""
    hub = make_hub()
    assert hub.admit("a") is None and hub.admit("a") is None
    assert hub.admit("a")[0] == 1008
    assert hub.admit("b") is None
    assert hub.admit("c")[0] == 1013
    hub.release("a")
    assert hub.admit("c") is None
    assert hub.count() == 3


def test_batch_encodes_once_and_knows_its_ids():
    """A batch joins the frames of its events and records the first and last chat ids."""
    items = [(None, b'{"state":3}'), (7, b'{"state":2}'), (8, b'{"state":2}')]
    batch = Batch.of(items)
    assert (batch.first_id, batch.last_id, batch.presence) == (7, 8, True)
    assert batch.frame.count(b"\x81") == 3


class Peer:
    """The client end of a socketpair, parsing frames like a browser would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.protocol = Protocol(ConnectionType.CLIENT)
        self.buffer = ""
        self.events: list[dict] = []

    def read(self, count: int) -> list[dict]:
        self.sock.settimeout(5)
        while len(self.events) < count:
            self.protocol.receive_data(self.sock.recv(65536))
            for event in self.protocol.events():
                self.buffer += event.data
                if event.message_finished:
                    self.events.append(json.loads(self.buffer))
                    self.buffer = ""
        return self.events


def open_connection(hub: Hub, room: str = "lobby", name: str = "x") -> tuple[Connection, Peer]:
    server_sock, client_sock = socket.socketpair()
    protocol = Protocol(ConnectionType.SERVER)
    conn = Connection(server_sock, protocol, hub, room=room, name=name, remote="local", settings=hub.settings)
    return conn, Peer(client_sock)


@pytest.fixture
def hub():
    hub = make_hub(MAX_CONNECTIONS=100, HISTORY_REPLAY=3)
    yield hub
    hub.stop()


def test_join_sends_welcome_then_history_then_live(hub):
    """A joining connection gets the welcome, the replay, then live messages, in that order."""
    for number in range(5):
        hub.backend.publish("lobby", "old", f"m{number}")
    conn, peer = open_connection(hub, name="me")
    assert hub.join(conn, None)
    hub.backend.publish("lobby", "new", "live")
    events = peer.read(5)
    assert events[0]["event"] == "welcome" and events[0]["you"] == "me"
    assert [e["message"] for e in events[1:5]] == ["m2", "m3", "m4", "live"]


def test_concurrent_publishers_reach_every_connection_in_one_order(hub):
    """Messages from many threads arrive at every connection once, all in the same order."""
    pairs = [open_connection(hub) for _ in range(5)]
    for conn, _ in pairs:
        assert hub.join(conn, None)

    def publish(sender: int) -> None:
        for number in range(200):
            hub.backend.publish("lobby", f"s{sender}", f"{sender}:{number}")

    threads = [threading.Thread(target=publish, args=(s,), name=f"publisher-{s}") for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    orders = []
    for _, peer in pairs:
        chats = [e for e in peer.read(1 + 4 * 200 + 4) if e["state"] == 2]
        while len(chats) < 800:
            chats = [e for e in peer.read(len(peer.events) + 1) if e["state"] == 2]
        orders.append([e["id"] for e in chats])
        for sender in range(4):
            mine = [e["message"] for e in chats if e["name"] == f"s{sender}"]
            assert mine == [f"{sender}:{n}" for n in range(200)]
    assert all(order == orders[0] for order in orders)
    assert orders[0] == sorted(orders[0], key=int)


def test_own_join_is_not_echoed(hub):
    """A joining client learns of itself from the welcome, not from a join event too."""
    conn, peer = open_connection(hub, name="solo")
    assert hub.join(conn, None)
    hub.backend.join("lobby", "someone", "other")
    events = peer.read(2)
    assert events[0]["event"] == "welcome"
    assert (events[1]["event"], events[1]["name"]) == ("join", "other")
