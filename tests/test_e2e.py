"""End to end: real servers (gunicorn gthread and the Flask development server), real clients."""

from __future__ import annotations

import functools
import json
import socket
import struct
import threading
import time

import pytest
import websocket
from conftest import Client, Closed, Server, wait_for

KINDS = ["gthread", "gevent", "dev"]


@pytest.fixture(params=["gthread", "gevent"])
def make_server(request, make_server):
    """Start servers of each worker class the deployment supports."""
    return functools.partial(make_server, request.param)


@pytest.fixture(scope="module", params=KINDS)
def shared(request) -> Server:
    """Start one server of each kind for the tests that need default settings."""
    server = Server(request.param, CHAT_HEARTBEAT_INTERVAL="0.2", CHAT_RATE_LIMIT="off").start()
    yield server
    server.stop()


def room_url(server: Server, room: str, **params: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in {"room": room, **params}.items())
    return f"{server.ws_url}?{query}"


def test_broadcast_reaches_everyone_including_sender(shared, connect, request):
    """Every text a client sends reaches every client in the room, the sender too."""
    url = room_url(shared, request.node.name[-30:].lower().replace("[", "-").replace("]", ""))
    clients = [connect(url) for _ in range(3)]
    clients[1].send("hello, world")
    for client in clients:
        event = client.next_where(lambda e: e["state"] == 2)
        assert event["message"] == "hello, world"
        assert event["room"]
        assert event["name"].startswith("guest-")
        assert int(event["id"]) > 0 and event["ts"] > 0


def test_seed_client_sees_state_and_message(shared, connect):
    """A client of the original example (plain text out, state/message in) works unchanged."""
    seed = connect(shared.ws_url)
    seed.send('{"looks": "like json"}')
    event = seed.next_where(lambda e: e["state"] == 2)
    assert event["message"] == '{"looks": "like json"}'


def test_heartbeat_arrives(shared, connect):
    """Every connection keeps getting the seed's heartbeat frame, never more often than the interval allows."""
    client = connect(shared.ws_url)
    began = time.monotonic()
    beats = 0
    while beats < 6:
        if client.next(skip_heartbeats=False) == {"state": 1, "message": "心跳"}:
            beats += 1
    # A loaded machine can only make heartbeats later, never more: this bound cannot fail for slowness.
    assert beats <= (time.monotonic() - began) / 0.2 + 1


def test_blank_messages_are_ignored(shared, connect):
    """Empty and whitespace-only messages are not broadcast."""
    client = connect(room_url(shared, "blank"))
    client.send("   ")
    client.send("")
    client.send("real")
    assert client.next_where(lambda e: e["state"] == 2)["message"] == "real"


def test_binary_frame_closes_1003(shared, connect):
    """A binary frame closes that client with 1003 and nobody else."""
    bystander = connect(room_url(shared, "binary"))
    client = connect(room_url(shared, "binary"))
    client.ws.send_binary(b"\x00\x01")
    assert client.close_code() == 1003
    bystander.send("still here")
    assert bystander.next_where(lambda e: e["state"] == 2)["message"] == "still here"


def test_oversized_message_closes_1009(make_server, connect):
    """A message over CHAT_MAX_MESSAGE_BYTES closes that client with 1009."""
    server = make_server(CHAT_MAX_MESSAGE_BYTES="1000")
    bystander = connect(server.ws_url)
    client = connect(server.ws_url)
    client.send("x" * 1001)
    assert client.close_code() == 1009
    bystander.send("y" * 1000)
    assert bystander.next_where(lambda e: e["state"] == 2)["message"] == "y" * 1000


def test_fragmented_message_is_one_message(shared, connect):
    """A message sent in fragments is broadcast as one message."""
    client = connect(room_url(shared, "fragments"))
    client.ws.send_frame(websocket.ABNF.create_frame("part one, ", websocket.ABNF.OPCODE_TEXT, 0))
    client.ws.send_frame(websocket.ABNF.create_frame("part two", websocket.ABNF.OPCODE_CONT, 1))
    assert client.next_where(lambda e: e["state"] == 2)["message"] == "part one, part two"


def test_invalid_utf8_closes_1007(shared, connect):
    """Invalid UTF-8 in a text frame is a protocol error closed with 1007."""
    client = connect(room_url(shared, "utf8"))
    client.ws.send(b"\xff\xfe", opcode=websocket.ABNF.OPCODE_TEXT)
    assert client.close_code() == 1007


def test_plain_get_on_ws_is_400(shared):
    """A plain HTTP GET on /ws gets 400 with a short explanation."""
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(shared.ws_url.replace("ws://", "http://"), timeout=5)
    assert error.value.code == 400
    assert b"WebSocket" in error.value.read()


def test_bad_room_closes_1008(shared, connect):
    """An invalid room name is refused with 1008 and a reason."""
    client = connect(room_url(shared, "No%20Spaces"))
    with pytest.raises(Closed) as closed:
        client.next()
    assert closed.value.code == 1008
    assert "room" in closed.value.reason


def test_connection_past_the_limit_gets_1013(make_server, connect):
    """The connection past CHAT_MAX_CONNECTIONS is closed at once with 1013, the others keep going."""
    server = make_server(CHAT_MAX_CONNECTIONS="3")
    kept = [connect(server.ws_url) for _ in range(3)]
    for client in kept:
        client.welcome()
    extra = connect(server.ws_url)
    assert extra.close_code(timeout=5) == 1013
    kept[0].send("after the refusal")
    assert kept[2].next_where(lambda e: e["state"] == 2)["message"] == "after the refusal"


def test_threads_limit_refuses_instead_of_queueing(connect):
    """With --threads 8 the default limit leaves room for HTTP, and the next socket gets 1013."""
    server = Server("gthread", threads=8)
    server.start()
    try:
        kept = [connect(server.ws_url) for _ in range(4)]
        for client in kept:
            client.welcome()
        extra = connect(server.ws_url)
        assert extra.close_code(timeout=5) == 1013
        assert server.health()["connections"] == 4
    finally:
        server.stop()


def test_slow_client_is_closed_1013_and_others_keep_pace(make_server, connect):
    """A client that never reads is closed with 1013 while the others get every message, in order."""
    server = make_server(CHAT_OUTBOX_LIMIT="65536", CHAT_RATE_LIMIT="off", CHAT_HEARTBEAT_INTERVAL="0.2")
    stalled = Client(server.ws_url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    try:
        reader = connect(server.ws_url)
        sender = connect(server.ws_url)
        reader.welcome()
        text = "z" * 8000
        for number in range(400):
            sender.send(f"{number} {text}")
            event = reader.next_where(lambda e: e["state"] == 2)
            assert event["message"].startswith(f"{number} ")
        assert stalled.close_code(timeout=10) == 1013
    finally:
        stalled.close()


def test_churn_leaves_registry_empty(shared, connect):
    """200 clients connecting, chatting and leaving (cleanly or not) leave no connection behind."""
    url = room_url(shared, "churn")
    errors: list[BaseException] = []

    def visit(number: int) -> None:
        try:
            client = Client(url)
            client.send(f"visitor {number}")
            client.next_where(lambda e: e["state"] == 2 and e["message"] == f"visitor {number}")
            client.close() if number % 2 else client.drop()
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    workers = [threading.Thread(target=visit, args=(n,), name=f"visitor-{n}") for n in range(200)]
    for batch in range(0, 200, 25):
        group = workers[batch:batch + 25]
        for worker in group:
            worker.start()
        for worker in group:
            worker.join(30)
    assert not errors, errors[:3]
    wait_for(lambda: shared.health()["connections"] == 0, 15, "registry to empty")


def test_thread_count_does_not_grow_with_churn(make_server):
    """Connection threads end with their connections: later rounds of clients leave none behind."""
    server = make_server(CHAT_HEARTBEAT_INTERVAL="0.2")
    (worker,) = server.worker_pids()

    def round_of(count: int) -> int:
        clients = [Client(server.ws_url) for _ in range(count)]
        for client in clients:
            client.welcome()
        for client in clients:
            client.close()
        wait_for(lambda: server.health()["connections"] == 0, 15, "registry to empty")
        return server.threads_of(worker)

    first = round_of(40)
    # gunicorn's pool serves only handshakes, and may grow by the few that overlapped, never by a round's 40.
    assert max(round_of(40) for _ in range(3)) < first + 10


def test_frames_stay_whole_under_concurrent_pings(shared, connect):
    """Large broadcasts and the client's pings interleave without corrupting any frame."""
    client = connect(room_url(shared, "pings"))
    big = "b" * 60_000
    for number in range(5):
        client.send(f"{number}{big}")
        client.ws.ping(b"are you there")
    for number in range(5):
        assert client.next_where(lambda e: e["state"] == 2)["message"] == f"{number}{big}"


def test_unanswered_pings_close_1011(make_server):
    """A client that stops answering pings is closed with 1011 (retryable, as websockets does) within two intervals."""
    server = make_server(CHAT_PING_INTERVAL="0.3", CHAT_PING_TIMEOUT="0.3", CHAT_HEARTBEAT_INTERVAL="60")
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    raw.settimeout(5)
    received = b""
    while struct.pack("!H", 1011) not in received:
        chunk = raw.recv(65536)
        assert chunk, f"closed without a 1011 close frame: {received[-80:]!r}"
        received += chunk
    raw.close()
    wait_for(lambda: server.health()["connections"] == 0, 5, "the silent client to be removed")


def deflate_client(server: Server) -> tuple[socket.socket, object, bytes]:
    """Open a WebSocket that offers permessage-deflate, as browsers do; return socket, protocol, leftovers."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request
    from wsproto.extensions import PerMessageDeflate

    client = WSConnection(ConnectionType.CLIENT)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(client.send(Request(host="127.0.0.1", target="/ws?room=deflate", extensions=[PerMessageDeflate()])))
    accepted = None
    while accepted is None:
        client.receive_data(sock.recv(65536))
        accepted = next((e for e in client.events() if isinstance(e, AcceptConnection)), None)
    return sock, client, accepted


@pytest.mark.parametrize("setting", ["on", "off"])
def test_compression_is_negotiated_only_when_enabled(make_server, setting):
    """permessage-deflate is accepted only with CHAT_COMPRESSION=on, and messages arrive intact either way."""
    from wsproto.events import TextMessage

    server = make_server(CHAT_COMPRESSION=setting, CHAT_RATE_LIMIT="off")
    sock, client, accepted = deflate_client(server)
    assert bool(accepted.extensions) is (setting == "on")
    text = "compressible " * 500
    sock.sendall(client.send(TextMessage(data=text)))
    received, buffer = [], ""
    while not any(e.get("state") == 2 for e in received):
        client.receive_data(sock.recv(65536))
        for event in client.events():
            buffer += event.data
            if event.message_finished:
                received.append(json.loads(buffer))
                buffer = ""
    assert next(e for e in received if e["state"] == 2)["message"] == text
    sock.close()


def test_a_presence_digest_arrives_after_a_message_sent_while_it_waited(shared, connect):
    """A join whose digest waits for the room's interval still reaches a v2 watcher that got a message meanwhile."""
    watcher = connect(room_url(shared, "digest-wait", v="2", name="watcher"))
    watcher.welcome()
    talker = connect(room_url(shared, "digest-wait", name="talker"))
    talker.welcome()
    # The talker's join made the room's digest just now: the next one waits an interval.
    late = connect(room_url(shared, "digest-wait", v="2", name="late"))
    late.welcome()
    talker.send("sent while the digest waits")
    assert watcher.next_where(lambda e: e["state"] == 2)["message"] == "sent while the digest waits"
    # The shared server's heartbeats (every 0.2 s) bound each read, so the deadline holds.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        event = watcher.next(skip_heartbeats=False)
        if event.get("event") == "presence" and "late" in event["joins"]:
            assert event["online"] == 3
            return
    raise AssertionError(f"no digest named late within 5 s: {watcher.events}")
