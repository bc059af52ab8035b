"""Hostile clients, findings 2 and 3: every frame costs, and limits survive a reconnect."""

from __future__ import annotations

import json
import socket
import struct
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import wait_for
from crowd import Crowd, Member, handshake, masked

from chat.socket import budget
from chat.socket.budget import Buckets

KEY = "frames-test-key-0123456789"


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """Encode a client frame, final or not."""
    data = bytearray(masked(opcode, payload))
    if not fin:
        data[0] &= 0x7F
    return bytes(data)


def close_code(member: Member, timeout: float = 10) -> int | None:
    """Read frames until the server's close frame and return its code (None if the socket ends without one)."""
    sock = member.sock
    sock.settimeout(timeout)
    buffer = member.buffer
    while True:
        while len(buffer) >= 2:
            size, offset = buffer[1] & 0x7F, 2
            if size == 126:
                size, offset = struct.unpack("!H", buffer[2:4])[0], 4
            elif size == 127:
                size, offset = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < offset + size:
                break
            if buffer[0] & 0x0F == 0x8:
                return struct.unpack("!H", buffer[offset:offset + 2])[0]
            buffer = buffer[offset + size:]
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk


def flood(sock: socket.socket, data: bytes, times: int) -> None:
    """Send data times over, stopping quietly once the server has closed."""
    try:
        for _ in range(times // 1000):
            sock.sendall(data * 1000)
    except OSError:
        pass


@pytest.mark.parametrize(("kind", "opcode"), [
    ("gthread", 0x1), ("gevent", 0x1), ("gthread", 0x9), ("gevent", 0xA),
])
def test_a_flood_of_empty_frames_is_closed_with_1008(make_server, kind, opcode):
    """Empty texts, pings and pongs sent flat out are counted, and the connection is closed with 1008."""
    server = make_server(kind)
    member = handshake(server.port, "/ws?room=flood")
    member.sock.setblocking(True)
    # Read while flooding: a client that reads nothing until it is done could find the server gone with the
    # close frame (behind a buffer of pongs) still unsent.
    with ThreadPoolExecutor(1, thread_name_prefix="flood-reader") as reader:
        code = reader.submit(close_code, member, 30)
        flood(member.sock, frame(opcode), 50_000)
        assert code.result(timeout=60) == 1008
    member.sock.close()


def test_empty_continuations_are_counted_and_closed(make_server):
    """A message that never ends, in empty continuation frames, is closed with 1008 instead of growing forever."""
    server = make_server("gevent")
    member = handshake(server.port, "/ws?room=flood")
    member.sock.setblocking(True)
    member.sock.sendall(frame(0x1, b"", fin=False))
    flood(member.sock, frame(0x0, b"", fin=False), 50_000)
    assert close_code(member) == 1008
    member.sock.close()


def test_a_message_in_too_many_fragments_is_closed(make_server):
    """Within the frame budget, a message in more than 256 fragments is still refused with 1008."""
    server = make_server(CHAT_FRAME_RATE="10000,10000")
    member = handshake(server.port, "/ws?room=flood")
    member.sock.setblocking(True)
    member.sock.sendall(frame(0x1, b"a", fin=False) + frame(0x0, b"b", fin=False) * 300)
    assert close_code(member) == 1008
    member.sock.close()


def test_reconnecting_does_not_refill_the_rate_limit(make_server, connect):
    """Ten reconnects sending 25 each get about one burst through, not ten (200 of 250 before)."""
    server = make_server(CHAT_API_KEY=KEY)
    watcher = connect(server.ws_url + "?room=burst")
    watcher.welcome()
    for round_ in range(10):
        member = handshake(server.port, "/ws?room=burst")
        member.sock.setblocking(True)
        member.sock.sendall(b"".join(frame(0x1, f"{round_}-{n}".encode()) for n in range(25)))
        member.sock.sendall(frame(0x8, struct.pack("!H", 1000)))
        close_code(member)
        member.sock.close()
    wait_for(lambda: server.health()["connections"] == 1, 10, "the reconnects to be gone")
    request = urllib.request.Request(
        f"{server.url}/api/rooms/burst/messages", data=json.dumps({"message": "marker"}).encode(), method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).close()
    got = 0
    while watcher.next_where(lambda event: event.get("state") == 2)["message"] != "marker":
        got += 1
    assert got < 100, f"{got} of 250 messages went through"


def test_handshakes_past_the_rate_are_refused_with_1013(make_server):
    """An address that opens connections faster than CHAT_HANDSHAKE_RATE is refused with 1013 past its burst."""
    server = make_server(CHAT_HANDSHAKE_RATE="0.01,5")
    crowd = Crowd(server.port, "/ws?room=quick", 8)
    try:
        crowd.pump(10, until=lambda: crowd.codes().get(1013, 0) >= 3)
        assert crowd.codes() == {None: 5, 1013: 3}
    finally:
        crowd.close()


def test_buckets_are_bounded_and_forget_the_idle(monkeypatch):
    """Buckets keep at most their limit, and forget a key once its bucket is as good as new."""
    now = [1000.0]
    monkeypatch.setattr(budget.time, "monotonic", lambda: now[0])
    buckets = Buckets(1.0, 2.0, limit=3)
    for key in "abcde":
        assert buckets.take(key) == (True, False)
    assert len(buckets) == 3
    assert buckets.take("e") == (True, False)
    assert buckets.take("e") == (False, False)
    now[0] += budget.FLOOD_WINDOW
    buckets.take("f")
    assert len(buckets) == 1
