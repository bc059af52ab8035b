"""The hub: admission, batches, delivery order, and the races of joining, closing and leaving.

Connections here are real sockets (socketpairs) driven in-process, so that each
race can be set up step by step instead of hoped for.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from conftest import wait_for
from wsproto import ConnectionType
from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection, TextMessage

from chat import config, protocol
from chat.backends import Item, Presence
from chat.backends.memory import MemoryBackend
from chat.fanout.thread import Fanout
from chat.metrics import Metrics
from chat.rooms.hub import Hub
from chat.socket.batch import Batch
from chat.socket.connection import CLOSE_WAIT, Connection
from chat.socket.reader import Reader
from chat.store import Stored, create


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
    """A batch joins the frames of its events and records, per version, the positions of the first and last it gets."""
    joined = Presence("join", "m1", "Ann", 2)
    items = [Item(None, b'{"state":3}', joined, (6, 1)), Item(7, b"{}", None, (7, 0)), Item(8, b"{}", None, (8, 0))]
    batch = Batch.of(items, 200)
    assert batch.spans == {1: ((6, 1), (8, 0)), 2: ((7, 0), (8, 0)), 3: ((7, 0), (8, 0))}
    assert batch.frames[1].count(b"\x81") == 3 and batch.frames[2].count(b"\x81") == 2


class Peer:
    """The client end of a socketpair, parsing frames like a browser would."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.protocol = Protocol(ConnectionType.CLIENT)
        self.buffer = ""
        self.events: list[dict] = []
        #: The close frame's code, once one arrived, and whether a data frame came after it.
        self.close_code: int | None = None
        self.after_close = 0

    def read(self, count: int) -> list[dict]:
        """Read until count events arrived."""
        self.sock.settimeout(5)
        while len(self.events) < count:
            if not self._receive():
                raise AssertionError(f"connection ended after {len(self.events)} events")
        return self.events

    def read_to_close(self) -> int | None:
        """Read until the server closes the TCP connection; return the close code it sent, if any."""
        self.sock.settimeout(10)
        while self._receive():
            pass
        return self.close_code

    def _receive(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return False
        self.protocol.receive_data(data)
        for event in self.protocol.events():
            if isinstance(event, CloseConnection):
                self.close_code = event.code
            elif isinstance(event, TextMessage):
                if self.close_code is not None:
                    self.after_close += 1
                self.buffer += event.data
                if event.message_finished:
                    self.events.append(json.loads(self.buffer))
                    self.buffer = ""
        return True


def open_connection(hub: Hub, room: str = "lobby", name: str = "x", buffer: int = 0) -> tuple[Connection, Peer]:
    """Return a connection on one end of a socketpair, and the peer on the other (small buffers if given)."""
    server_sock, client_sock = socket.socketpair()
    if buffer:
        for sock in (server_sock, client_sock):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    conn = hub.connection(server_sock, Protocol(ConnectionType.SERVER), room=room, name=name, remote="local")
    return conn, Peer(client_sock)


def in_thread(work, name: str) -> threading.Thread:
    """Run work on a named thread and return it."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread


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
        chats = [e for e in peer.read(1 + 4 * 200) if e["state"] == 2]
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
    hub.backend.enter("lobby", "someone", "other", None, 0)
    events = peer.read(2)
    assert events[0]["event"] == "welcome"
    assert (events[1]["event"], events[1]["name"]) == ("join", "other")


def test_a_close_frame_behind_a_backlog_still_reaches_the_client(hub):
    """A close (here a ping timeout's 1011) queued behind a backlog is flushed on leave, not thrown away."""
    conn, peer = open_connection(hub, buffer=4096)
    assert hub.join(conn, None)
    for number in range(40):
        conn.send(json.dumps({"state": 2, "message": f"{number}" + "x" * 5000}).encode())
    assert conn.backlogged()
    conn.close(1011, "ping timeout")
    reader = in_thread(peer.read_to_close, "slow-peer")
    hub.leave(conn)
    conn.sock.close()
    reader.join(10)
    assert peer.close_code == 1011
    assert [e["message"][:2].rstrip("x") for e in peer.events[1:]] == [str(n) for n in range(40)]


def test_a_long_replay_never_blocks_the_joining_thread(hub):
    """A replay bigger than the socket takes goes to the outbox; join returns, and the client still gets it all."""
    for number in range(3):
        hub.backend.publish("lobby", "old", f"{number}" + "h" * 60_000)
    conn, peer = open_connection(hub, buffer=4096)
    joined = []
    joiner = in_thread(lambda: joined.append(hub.join(conn, None)), "joiner")
    joiner.join(5)
    assert joined == [True], "join blocked on a client that was not reading"
    hub.backend.publish("lobby", "new", "live")
    events = peer.read(5)
    assert [e["message"][:1] for e in events[1:4]] == ["0", "1", "2"] and events[4]["message"] == "live"


def test_a_join_after_shutdown_began_is_closed_with_1001(hub):
    """A connection admitted before the shutdown but joining after it is told 1001, not served."""
    conn, peer = open_connection(hub)
    hub.shutdown(0.1)
    assert hub.join(conn, None) is False
    hub.leave(conn)
    conn.sock.close()
    assert peer.read_to_close() == 1001


def test_no_data_frame_follows_the_close_reply(hub):
    """Deliveries racing the client's close never write a frame after the server's close reply."""
    conn, peer = open_connection(hub)
    assert hub.join(conn, None)
    stop = threading.Event()

    def publish() -> None:
        # Bounded, so the outbox never reaches its limit (a 1013 would end the race another way).
        for _ in range(3000):
            if stop.is_set():
                return
            hub.backend.publish("lobby", "racer", "data")

    reading = in_thread(peer.read_to_close, "peer")
    racer = in_thread(publish, "racer")
    wait_for(lambda: len(peer.events) > 50, 5, "live traffic")
    # A masked close frame, code 1000, built by hand: the peer's wsproto state belongs to its reader.
    mask = b"\x01\x02\x03\x04"
    peer.sock.sendall(b"\x88\x82" + mask + bytes(a ^ b for a, b in zip((1000).to_bytes(2, "big"), mask, strict=False)))
    Reader(conn, hub.settings, hub.publish, hub.stats.count).serve()
    stop.set()
    racer.join(5)
    hub.leave(conn)
    conn.sock.close()
    reading.join(10)
    assert peer.close_code == 1000
    assert peer.after_close == 0


def test_release_returns_when_watching_the_socket_failed(hub):
    """A connection whose socket the fan-out could not watch is still released, promptly."""
    conn, peer = open_connection(hub, buffer=4096)
    assert hub.join(conn, None)
    conn.outbox.write(b"x" * 1_000_000, limited=False)
    os_fd = conn.sock.detach()
    socket.socket(fileno=os_fd).close()
    hub.fanout.watch(conn)
    released = []
    releaser = in_thread(lambda: released.append(hub.fanout.release(conn, timeout=5)), "releaser")
    releaser.join(8)
    assert released == [True]


def test_the_reader_wakes_when_another_thread_closes_its_connection():
    """A reader asleep until its next heartbeat a minute away ends within CLOSE_WAIT of a close from elsewhere."""
    hub = make_hub(MAX_CONNECTIONS=100, HEARTBEAT_INTERVAL=60, PING_INTERVAL=60)
    try:
        conn, peer = open_connection(hub)
        assert hub.join(conn, None)
        reader = in_thread(lambda: Reader(conn, hub.settings, hub.publish, hub.stats.count).serve(), "reader")
        peer.read(1)
        conn.close(1013, "closed by another thread")
        # The next heartbeat is a minute away: ending before it shows the close woke the reader.
        reader.join(CLOSE_WAIT + 20)
        assert not reader.is_alive()
        hub.leave(conn)
    finally:
        hub.stop()


def test_a_connection_that_fails_to_build_gives_its_place_back(monkeypatch):
    """If building the connection raises, the admission slot is released: later clients are not refused."""
    import websocket
    from werkzeug.serving import make_server

    from chat import create_app

    app = create_app({"MAX_CONNECTIONS": 2, "HEARTBEAT_INTERVAL": 5})
    hub = app.extensions["chat"].hub
    failures = []

    def broken(*args, **kwargs):
        failures.append(1)
        raise RuntimeError("cannot build this connection")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = in_thread(server.serve_forever, "dev-server")
    try:
        url = f"ws://127.0.0.1:{server.server_port}/ws"
        with monkeypatch.context() as patch:
            patch.setattr(hub, "connection", broken)
            for _ in range(4):
                refused = websocket.create_connection(url, timeout=5)
                assert refused.recv_data()[0] == websocket.ABNF.OPCODE_CLOSE
                refused.close()
                wait_for(lambda: hub.count() == 0, 5, "the failed connection's place to be given back")
        assert len(failures) == 4
        welcome = websocket.create_connection(url, timeout=5)
        assert json.loads(welcome.recv())["event"] == "welcome"
        welcome.close()
    finally:
        server.shutdown()
        serving.join(5)
        hub.stop()


def stored_hub(tmp_path, **overrides) -> Hub:
    """Return a hub on the memory backend with a SQLite store in tmp_path."""
    settings = config.load({}, {"MAX_CONNECTIONS": 100, "MAX_CONNECTIONS_PER_IP": 100, **overrides})
    store = create(f"sqlite:///{tmp_path / 'chat.db'}", settings, str(tmp_path))
    return Hub(MemoryBackend(settings), settings, Metrics(), store=store)


def counting_reads(hub: Hub) -> list[int]:
    """Count the store's reads of a room's newest messages (one entry per read)."""
    reads: list[int] = []
    newest = hub.store.database.newest

    def counted(*args, **kwargs):
        reads.append(1)
        return newest(*args, **kwargs)

    hub.store.database.newest = counted
    return reads


def test_joins_into_a_room_the_backend_holds_whole_read_the_store_once(tmp_path):
    """Twenty joins into a room with a short history read the store once between them, and each gets it all."""
    hub = stored_hub(tmp_path, HISTORY_REPLAY=5)
    try:
        hub.start()
        reads = counting_reads(hub)
        hub.publish(open_connection(hub, name="ann")[0], "first")
        hub.store.flush()
        peers = []
        for number in range(20):
            conn, peer = open_connection(hub, name=f"u{number}")
            assert hub.join(conn, None)
            peers.append(peer)
        assert len(reads) == 1
        assert all([e.get("message") for e in peer.read(2)][1] == "first" for peer in peers)
    finally:
        hub.stop()


def test_a_restarted_backend_replays_the_stores_tail_and_what_came_since(tmp_path):
    """After a restart, joins get the stored messages and the new ones in order, the store read once."""
    hub = stored_hub(tmp_path, HISTORY_REPLAY=5)
    hub.start()
    now = time.time_ns() // 1_000_000
    for number in range(1, 4):
        hub.store.append(Stored("lobby", number, now, "old", f"old{number}"))
    hub.stop()
    hub = stored_hub(tmp_path, HISTORY_REPLAY=5)
    try:
        hub.start()
        reads = counting_reads(hub)
        first, early = open_connection(hub, name="early")
        assert hub.join(first, None)
        hub.backend.publish("lobby", "new", "new1")
        late, peer = open_connection(hub, name="late")
        assert hub.join(late, None)
        assert [e["message"] for e in early.read(4)[1:4]] == ["old1", "old2", "old3"]
        assert [e["message"] for e in peer.read(5)[1:5]] == ["old1", "old2", "old3", "new1"]
        assert len(reads) == 1
    finally:
        hub.stop()


def test_a_room_nobody_here_is_in_costs_the_fan_out_nothing():
    """Presence for a room without connections in this process is neither framed for anyone nor kept for a digest:
    the fan-out never asks for that room's members, not even once its digest would be due."""
    asked: list[str] = []
    fanout = Fanout(lambda room: asked.append(room) or [], lambda room: room != "empty", Metrics(), interval=0.01)
    fanout.start()
    try:
        fanout.deliver("empty", [Item(None, protocol.presence("join", "empty", "ann", 1),
                                      Presence("join", "m1", "ann", 1), (0, 1))])
        began = time.monotonic()
        # Rounds of work for an occupied room until many digest intervals have passed: a digest kept for the
        # empty room would have been due, and asked for its members, by then.
        for number in range(1, 10_000):
            fanout.deliver("busy", [Item(number, b'{"state":2}', None, (number, 0))])
            wait_for(lambda count=number: asked.count("busy") >= count, 10, "the fan-out to reach the busy room")
            if time.monotonic() - began > 0.2:
                break
        assert "empty" not in asked
    finally:
        fanout.stop()
