"""Wire-level fuzzing of a live server: malformed frames must hurt no one else."""

from __future__ import annotations

import os
import random
import socket
import struct

import pytest
from conftest import wait_for
from crowd import handshake, masked

from chat.server.worker import TOO_LARGE

SEED = int(os.environ.get("CHAT_FUZZ_SEED", "20261126"))
ROUNDS = int(os.environ.get("CHAT_FUZZ_ROUNDS", "150"))


def hostile_bytes(rng: random.Random) -> bytes:
    """Return one malformed or unusual sequence of client bytes."""
    choice = rng.randrange(10)
    if choice == 0:
        return masked(rng.choice([0x3, 0x4, 0x5, 0xB, 0xF]), b"reserved opcode")
    if choice == 1:
        return masked(0x1, b"\xc3\x28 invalid utf-8")
    if choice == 2:
        return struct.pack("!BB", 0x81, 0x7F) + struct.pack("!Q", 2**63 - 1) + os.urandom(4)
    if choice == 3:
        return struct.pack("!BB", 0x81, 5) + b"nomsk"
    if choice == 4:
        return masked(0x1, b"fragment one")[:-3]
    if choice == 5:
        frame = bytearray(masked(0x1, b"first part"))
        frame[0] &= 0x7F
        return bytes(frame) + masked(0x1, b"new message during a fragmented one")
    if choice == 6:
        return masked(0x9, b"p" * 126)
    if choice == 7:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
    if choice == 8:
        return masked(0x0, b"continuation with nothing to continue")
    return masked(0x8, b"\x03\xe8" + b"\xff\xfe")


def test_malformed_frames_leave_the_server_serving(make_server, connect):
    """After a burst of malformed frames and abrupt closes, a normal client chats and nothing leaks."""
    server = make_server(CHAT_RATE_LIMIT="off")
    (worker,) = server.worker_pids()
    baseline_client = connect(server.ws_url + "?room=baseline")
    baseline_client.next()
    rng = random.Random(SEED)
    for _ in range(ROUNDS):
        # Every round's handshake must succeed: a round that never connected would fuzz nothing.
        member = handshake(server.port, "/ws?room=fuzz")
        member.sock.setblocking(True)
        try:
            for _ in range(rng.randrange(1, 4)):
                member.sock.sendall(hostile_bytes(rng))
            if rng.random() < 0.5:
                member.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            member.sock.close()
    baseline_client.send("still alive")
    assert baseline_client.next_where(lambda e: e["state"] == 2)["message"] == "still alive"
    wait_for(lambda: server.health()["connections"] == 1, 15, "fuzz clients to be removed")
    threads = server.threads_of(worker)
    assert "Traceback" not in server.log()
    baseline_client.close()
    wait_for(lambda: server.health()["connections"] == 0, 5, "the registry to empty")
    assert server.threads_of(worker) <= threads


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /ws HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
)
def test_bad_handshakes_get_an_http_error(shared_server, request_head):
    """Oversized headers, a missing key and garbage get an HTTP error, not a hang or a crash."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=5) as sock:
        sock.sendall(request_head)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:80]
    assert shared_server.health()["status"] == "ok"


@pytest.fixture(scope="module")
def shared_server():
    from conftest import Server

    server = Server("gthread").start()
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/", "/ws"])
def test_a_head_over_64_kib_gets_431(shared_server, path):
    """A request head still without its end past 64 KiB is answered 431 and closed, and the server serves on."""
    with socket.create_connection(("127.0.0.1", shared_server.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
        try:
            for _ in range(20):
                sock.sendall(b"X-Filler: " + b"a" * 8000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(4096)
    assert answer == TOO_LARGE, answer[:80]
    assert shared_server.health()["status"] == "ok"
