"""End to end on Redis: gunicorn processes share rooms, and survive Redis and worker crashes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
import websocket
from conftest import Client, Server, on_each_worker, wait_for, worker_of
from reconnecting import Resuming
from redis_server import RedisCluster, RedisServer

TTL = 2.0


def is_welcome(event: dict) -> bool:
    return event.get("event") == "welcome"


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
    """Thirty clients placed ten on each of three workers get every message in one order, and exact online counts."""
    server = make_server(workers=3, CHAT_BACKEND_URL=clean_redis_url, CHAT_RATE_LIMIT="off")
    welcomes: list[dict] = []

    def welcomed(index: int) -> Client:
        client = connect(f"{server.ws_url}?room=many&name=u{index:02}")
        welcomes.append(client.next_where(is_welcome))
        assert welcomes[-1]["online"] == index + 1
        return client

    clients = on_each_worker(server, welcomed, per_worker=10)
    welcome = welcomes[-1]
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


@pytest.fixture
def peers(resuming) -> Callable[[Server, str], Resuming]:
    """Open reconnecting clients in the room chaos."""
    return lambda server, name: resuming(server, "chaos", name)


def send_all(sender: Resuming, count: int, progress: list[int], interval: float) -> None:
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
        # A receiver on each worker, deliberately: the kernel could hand them all to one.
        receivers = on_each_worker(front, lambda n: peers(front, f"a{n}"))
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
            wait_for(lambda: "unavailable" in first.notices + second.notices, 10, "a sender to be told Redis is down")
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
        print(
            f"\nchaos: {len(acknowledged)} acknowledged, {len(first.notices) + len(second.notices)} notices, "
            f"{sum(1 for peer in everyone if peer.reconnects)} clients resumed with since, "
            f"online exact {settled:.1f} s after the kill (TTL {TTL} s)"
        )
