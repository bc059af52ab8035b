"""Hostile clients beside ordinary ones: the replay, frame-flood and reconnect attacks cost the others nothing."""

from __future__ import annotations

import json
import struct
import urllib.request

import pytest
from conftest import crowded, proc_status, wait_for
from crowd import Crowd, handshake, masked

KEY = "crowd-test-key-0123456789"
ATTACKER = "X-Forwarded-For: 203.0.113.66\r\n"
SENDERS, EACH = 10, 5

# The worker's memory grew 12-59 MB alone, and 102 and 106 MB (over the bound) in two of six runs of the suite in
# four workers, with the crowd tests kept apart: make test runs this file by itself.
pytestmark = [crowded, pytest.mark.alone]


def ordinary(number: int) -> str:
    """Return client number's own address."""
    return f"X-Forwarded-For: 198.51.100.{number + 1}\r\n"


def attacker(port: int, room: str) -> object:
    """Open a connection from the attacker's address."""
    member = handshake(port, f"/ws?room={room}", rcvbuf=4096, headers=ATTACKER)
    member.sock.setblocking(True)
    return member


def post(server, room: str, text: str) -> None:
    """Post text into room through the API."""
    request = urllib.request.Request(
        f"{server.url}/api/rooms/{room}/messages", data=json.dumps({"message": text}).encode(), method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=30).close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_attackers_beside_a_hundred_clients_cost_them_nothing(make_server, kind):
    """While one address floods history, joins without reading, floods frames and reconnects to burst, 100 others
    get every message of theirs, stay open, and the worker stays within a modest amount of memory."""
    server = make_server(
        kind, CHAT_TRUST_PROXY="on", CHAT_API_KEY=KEY, CHAT_PING_INTERVAL="300", CHAT_HANDSHAKE_RATE="10,100",
    )
    worker = server.worker_pids()[0]
    crowd = Crowd(server.port, "/ws?room=calm", 100, keep=lambda e: e.get("state") == 2, headers=ordinary)
    # Every member in the room before anything is sent: a later joiner is owed only the last 50 messages.
    crowd.pump(60, until=lambda: all(member.states[3] for member in crowd.members))
    assert all(member.states[3] for member in crowd.members), "not every member was welcomed"
    attackers = []
    try:
        before = proc_status(worker, "VmRSS")
        # 1: escaped history in a room of its own, then joiners that never read.
        fillers = [attacker(server.port, "attic") for _ in range(3)]
        for number in range(50):
            fillers[number % 3].sock.sendall(masked(0x1, b"\x01" * 65_536))
        attackers += fillers + [attacker(server.port, "attic") for _ in range(30)]
        # 2: empty frames flat out, in the ordinary clients' room.
        flooders = [attacker(server.port, "calm") for _ in range(2)]
        attackers += flooders
        for flooder in flooders:
            try:
                flooder.sock.sendall(masked(0x1, b"") * 20_000)
            except OSError:
                pass
        # 3: reconnects, each with a burst of messages.
        for round_ in range(10):
            member = attacker(server.port, "calm")
            member.sock.sendall(b"".join(masked(0x1, f"spam {round_}-{n}".encode()) for n in range(25)))
            member.sock.sendall(masked(0x8, struct.pack("!H", 1000)))
            attackers.append(member)
        for index in range(SENDERS * EACH):
            crowd.members[index % SENDERS].sock.sendall(masked(0x1, f"calm-{index}".encode()))
        post(server, "calm", "marker")

        def everyone_has_the_marker() -> bool:
            return all(any(e["message"] == "marker" for e in member.frames) for member in crowd.members)

        crowd.pump(120, until=everyone_has_the_marker)
        for member in crowd.members:
            got = sorted(e["message"] for e in member.frames if e["message"].startswith("calm-"))
            assert got == sorted(f"calm-{index}" for index in range(SENDERS * EACH))
        assert crowd.codes() == {None: 100}
        spam = sum(1 for e in crowd.members[-1].frames if e["message"].startswith("spam"))
        assert spam < 100, f"{spam} of 250 reconnect messages went through"
        grown = (proc_status(worker, "VmRSS") - before) / 1024
        assert grown < 100, f"the attacks added {grown:.0f} MB"
        wait_for(lambda: server.health()["status"] == "ok", 10, "a healthy worker")
    finally:
        crowd.close()
        for member in attackers:
            member.sock.close()
