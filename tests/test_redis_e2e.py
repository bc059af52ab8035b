"""End to end on Redis: gunicorn processes share rooms, and survive Redis and worker crashes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket
from conftest import Server, wait_for
from redis_server import RedisCluster, RedisServer

TTL = 2.0


def is_welcome(event: dict) -> bool:
    return event.get("event") == "welcome"


def worker_of(server: Server, ws: websocket.WebSocket) -> int:
    """Return the pid of the gunicorn worker that holds the server side of ws's connection."""
    port = ws.sock.getsockname()[1]
    # A set: read while sockets come and go, the table can list one twice.
    inodes = sorted({
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].rsplit(":", 1)[1], 16) == server.port and int(fields[2].rsplit(":", 1)[1], 16) == port
    })
    assert len(inodes) == 1, inodes
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inodes[0]}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker of {server.url} holds the connection from port {port}")


def test_a_message_sent_to_either_server_reaches_both(make_server, connect, clean_redis_url):
    """Two servers on one Redis deliver every message to the clients of both, same ids, same order."""
    env = {"CHAT_BACKEND_URL": clean_redis_url, "CHAT_RATE_LIMIT": "off"}
    servers = [make_server(**env), make_server(**env)]
    clients = [connect(f"{s.ws_url}?room=both&name=c{i}{j}") for i, s in enumerate(servers) for j in range(2)]
    for client in clients:
        client.next_where(is_welcome)
    for index in range(20):
        clients[index % len(clients)].send(f"m{index}")
    seen = [[(event["id"], event["message"]) for event in client.chats(20)] for client in clients]
    assert all(timeline == seen[0] for timeline in seen)
    ids = [int(message_id) for message_id, _ in seen[0]]
    assert ids == list(range(ids[0], ids[0] + 20))
    assert sorted(text for _, text in seen[0]) == sorted(f"m{index}" for index in range(20))


def test_thirty_clients_over_three_workers_share_one_room(make_server, connect, clean_redis_url):
    """Thirty clients spread over three workers get every message in one order, and exact online counts."""
    server = make_server(workers=3, CHAT_BACKEND_URL=clean_redis_url, CHAT_RATE_LIMIT="off")
    clients: list = []
    stopped: set[int] = set()
    try:
        for index in range(30):
            used = {worker_of(server, client.ws) for client in clients}
            if index in (10, 20) and len(used) < 3:
                # The kernel hands a connection to whichever worker accepts first, and one that answers quickly
                # can take them all: the workers that have clients stop for a while, so the next go to another.
                for pid in used - stopped:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
            client = connect(f"{server.ws_url}?room=many&name=u{index:02}")
            welcome = client.next_where(is_welcome)
            assert welcome["online"] == index + 1
            clients.append(client)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert welcome["users"] == [f"u{index:02}" for index in range(30)]
    assert len({worker_of(server, client.ws) for client in clients}) == 3
    for index, client in enumerate(clients):
        client.send(f"from u{index:02}")
    seen = [[(event["id"], event["message"]) for event in client.chats(30)] for client in clients]
    assert all(timeline == seen[0] for timeline in seen)
    assert sorted(text for _, text in seen[0]) == sorted(f"from u{index:02}" for index in range(30))
    for client in clients[20:]:
        client.close()
    clients[0].next_where(lambda event: event.get("event") == "leave" and event["online"] == 20)
    probe = connect(f"{server.ws_url}?room=many&name=probe")
    welcome = probe.next_where(is_welcome)
    assert welcome["online"] == 21
    assert welcome["users"] == sorted([f"u{index:02}" for index in range(20)] + ["probe"])


class Peer:
    """A client that reads on its own thread, reconnects with since=<last id seen>, and keeps its timeline."""

    def __init__(self, server: Server, name: str, room: str) -> None:
        self.server, self.name, self.room = server, name, room
        self.chats: list[tuple[int, str]] = []
        self.gaps: list[dict] = []
        self.notices = 0
        self.reconnects = 0
        self.connected = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self.ws = self._connect()
        self._thread = threading.Thread(target=self._run, name=f"peer-{name}")
        self._thread.start()

    @property
    def last_id(self) -> int | None:
        with self._changed:
            return self.chats[-1][0] if self.chats else None

    def texts(self) -> list[str]:
        with self._changed:
            return [text for _, text in self.chats]

    def _connect(self) -> websocket.WebSocket:
        since = self.last_id
        query = f"room={self.room}&name={self.name}" + (f"&since={since}" if since is not None else "")
        ws = websocket.create_connection(f"{self.server.ws_url}?{query}", timeout=5)
        with self._changed:
            self.connected = True
        return ws

    def send(self, text: str) -> bool:
        """Send text; False when the connection is down."""
        try:
            self.ws.send(text)
        except (OSError, websocket.WebSocketException):
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                opcode, data = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                opcode, data = websocket.ABNF.OPCODE_CLOSE, b""
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                self._reconnect()
                continue
            event = json.loads(data)
            with self._changed:
                if event["state"] == 2:
                    self.chats.append((int(event["id"]), event["message"]))
                elif event["state"] == 4 and event["code"] == "unavailable":
                    self.notices += 1
                elif event.get("event") == "gap":
                    self.gaps.append(event)
                self._changed.notify_all()

    def _reconnect(self) -> None:
        with self._changed:
            self.connected = False
        self.ws.close(timeout=0.1)
        delay = 0.05
        while not self._stop.wait(delay):
            try:
                self.ws = self._connect()
            except (OSError, websocket.WebSocketException):
                delay = min(delay * 2, 0.5)
                continue
            self.reconnects += 1
            return

    def wait(self, predicate: Callable[[Peer], bool], timeout: float) -> None:
        """Wait until predicate holds for this peer, or fail."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(f"{self.name}: timed out; last events {self.chats[-3:]}")

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.close(timeout=0.5)
        self._thread.join(5)


@pytest.fixture
def peers() -> Iterator[Callable[[Server, str], Peer]]:
    """Open peers in one room, closed after the test."""
    opened: list[Peer] = []

    def open_peer(server: Server, name: str) -> Peer:
        peer = Peer(server, name, "chaos")
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


def send_all(sender: Peer, count: int, progress: list[int], interval: float) -> None:
    """Send count numbered messages at a steady pace, whether or not the connection is up."""
    began = time.monotonic()
    for index in range(count):
        sender.send(f"{sender.name}-{index:04}")
        progress[0] += 1
        delay = began + (index + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["server", "cluster"])
def test_redis_restart_and_worker_kill_lose_no_acknowledged_message(make_server, peers, topology):
    """Across a Redis crash (on a cluster: the room's primary) and a killed worker, every client gets every
    acknowledged message once, in order."""
    with RedisServer(persistent=True) if topology == "server" else RedisCluster(persistent=True) as redis_store:
        store = redis_store if topology == "server" else redis_store.node_for("{chaos}")
        env = {
            "CHAT_BACKEND_URL": redis_store.url, "CHAT_RATE_LIMIT": "off", "CHAT_HISTORY_SIZE": "5000",
            "CHAT_PRESENCE_TTL": str(TTL), "CHAT_HEARTBEAT_INTERVAL": "1",
        }
        front, back = make_server(workers=2, **env), make_server(**env)
        first = peers(front, "s1")
        doomed = worker_of(front, first.ws)
        receivers = []
        # A receiver on each worker: the other worker stops while one connects, so that the kernel cannot hand
        # the connection to it.
        for worker in front.worker_pids():
            others = [pid for pid in front.worker_pids() if pid != worker]
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            try:
                receivers.append(peers(front, f"a{len(receivers)}"))
            finally:
                for pid in others:
                    os.kill(pid, signal.SIGCONT)
        workers = [worker_of(front, peer.ws) for peer in receivers]
        assert sorted(workers) == sorted(front.worker_pids()) and doomed in workers
        second = peers(back, "s2")
        receivers += [peers(back, "b0"), peers(back, "b1")]
        everyone = [first, second, *receivers]
        second.send("warm")
        for peer in everyone:
            peer.wait(lambda p: "warm" in p.texts(), 10)

        progress = [0]
        senders = [
            threading.Thread(target=send_all, args=(sender, 1000, progress, 0.004), name=f"send-{sender.name}")
            for sender in (first, second)
        ]
        for thread in senders:
            thread.start()
        try:
            wait_for(lambda: progress[0] >= 500, 20, "500 messages sent")
            store.stop(signal.SIGKILL)
            wait_for(lambda: first.notices + second.notices > 0, 10, "a sender to be told Redis is down")
            store.start()
            if topology == "cluster":
                redis_store.wait_ok()
            wait_for(lambda: progress[0] >= 1200, 20, "1200 messages sent")
            os.kill(doomed, signal.SIGKILL)
            killed = time.monotonic()
        finally:
            for thread in senders:
                thread.join(30)

        wait_for(lambda: all(peer.connected for peer in everyone), 15, "every peer to be connected")
        wait_for(lambda: front.health()["backend"] and back.health()["backend"], 15, "both servers healthy")
        ends = {f"end-{sender.name}" for sender in (first, second)}
        for sender in (first, second):
            assert sender.send(f"end-{sender.name}")
        for peer in everyone:
            peer.wait(lambda p: ends <= set(p.texts()), 15)

        acknowledged = {
            text for sender in (first, second) for text in sender.texts() if text.startswith(sender.name + "-")
        }
        assert len(acknowledged) > 1000
        assert any(peer.reconnects for peer in everyone), "nobody was on the killed worker"
        for peer in everyone:
            ids = [message_id for message_id, _ in peer.chats]
            texts = peer.texts()
            assert ids == sorted(set(ids)), f"{peer.name}: ids out of order or repeated"
            assert len(texts) == len(set(texts)), f"{peer.name}: a message arrived twice"
            assert acknowledged <= set(texts), f"{peer.name} misses {sorted(acknowledged - set(texts))[:5]}"
            assert peer.gaps == []

        names = sorted([peer.name for peer in everyone] + ["probe"])

        def exact_presence() -> bool:
            probe = websocket.create_connection(f"{back.ws_url}?room=chaos&name=probe", timeout=5)
            try:
                while True:
                    welcome = json.loads(probe.recv())
                    if is_welcome(welcome):
                        return welcome["online"] == len(names) and welcome["users"] == names
            finally:
                probe.close()

        wait_for(exact_presence, TTL + 10, "the killed worker's members to leave online")
        settled = time.monotonic() - killed
        assert settled <= 30
        print(
            f"\nchaos: {len(acknowledged)} acknowledged, {first.notices + second.notices} unavailable notices, "
            f"{sum(1 for peer in everyone if peer.reconnects)} clients resumed with since, "
            f"online exact {settled:.1f} s after the kill (TTL {TTL} s)"
        )
