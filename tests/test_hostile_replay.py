"""Hostile clients, finding 1: a room's escaped history cannot multiply the server's memory through replays or pages."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from conftest import proc_status, wait_for
from crowd import handshake

KEY = "replay-test-key-0123456789"
#: A message of 65,536 control characters: each escapes to \u0001 in JSON, six times its size.
ESCAPED = "\x01" * 65_530


def post(server, room: str, text: str) -> None:
    """Post text into room through the API."""
    request = urllib.request.Request(
        f"{server.url}/api/rooms/{room}/messages", data=json.dumps({"message": text}).encode(), method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201


def fill(server, room: str, count: int = 50) -> None:
    """Post count escaped messages into room, each told apart by its last characters."""
    for n in range(count):
        post(server, room, ESCAPED + f"{n:06d}")


def page(server, path: str) -> tuple[int, dict]:
    """Return the size and body of a history page."""
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        body = response.read()
    return len(body), json.loads(body)


def has_data(sock: socket.socket) -> bool:
    """Tell whether the server has sent sock something (its welcome)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_joiners_that_never_read_share_one_replay(make_server, kind):
    """50 joiners that never read, into 3 MB+ of escaped history, add under 20 MB to the worker (1.2 GB before)."""
    server = make_server(kind, CHAT_API_KEY=KEY, CHAT_PING_INTERVAL="300")
    fill(server, "attic")
    worker = server.worker_pids()[0]
    before = proc_status(worker, "VmRSS")
    joiners = [handshake(server.port, "/ws?room=attic", rcvbuf=4096) for _ in range(50)]
    try:
        for joiner in joiners:
            joiner.sock.setblocking(True)
        wait_for(lambda: all(has_data(joiner.sock) for joiner in joiners), 30, "every joiner's welcome")
        wait_for(lambda: server.health()["connections"] == 50, 10, "50 connections")
        grown = (proc_status(worker, "VmRSS") - before) / 1024
        assert grown < 20, f"50 joiners added {grown:.1f} MB"
    finally:
        for joiner in joiners:
            joiner.sock.close()


def test_a_history_too_big_for_one_replay_is_cut_with_a_gap(make_server, connect):
    """A joiner gets the newest messages that fit in CHAT_REPLAY_BYTES after a gap counting the rest, then live ones."""
    server = make_server(CHAT_API_KEY=KEY, CHAT_REPLAY_BYTES="800000")
    fill(server, "attic", 10)
    client = connect(server.ws_url + "?room=attic")
    client.welcome()
    gap = client.next()
    assert (gap["event"], gap["missed"]) == ("gap", 8)
    replayed = client.chats(2)
    assert [event["message"][-6:] for event in replayed] == ["000008", "000009"]
    post(server, "attic", "live")
    assert client.chats(1)[0]["message"] == "live"


def test_a_history_page_is_bounded_by_bytes(make_server):
    """A page of escaped messages holds about CHAT_PAGE_BYTES, says there is more, and paging reaches the rest."""
    server = make_server(CHAT_API_KEY=KEY)
    fill(server, "attic", 12)
    size, body = page(server, "/api/rooms/attic/messages?limit=100")
    assert size < 1.5 * 1024 * 1024, f"a page of {size} bytes"
    assert body["more"] and body["messages"][-1]["message"].endswith("000011")
    seen = [event["message"][-6:] for event in body["messages"]]
    while body["more"]:
        _, body = page(server, f"/api/rooms/attic/messages?limit=100&before={body['messages'][0]['id']}")
        seen = [event["message"][-6:] for event in body["messages"]] + seen
    assert seen == [f"{n:06d}" for n in range(12)]


def api(server, method: str, path: str, body: dict) -> dict:
    """Send body to the API with the key and return the answer."""
    request = urllib.request.Request(
        f"{server.url}/api{path}", data=json.dumps(body).encode(), method=method,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_resume_before_v3_is_cut_from_what_the_client_gets(make_server, connect, version):
    """Edits are protocol v3's: a v1 or v2 client's resume fills CHAT_REPLAY_BYTES with the messages it missed,
    as they stand, not with the edits it never gets."""
    server = make_server(CHAT_API_KEY=KEY, CHAT_REPLAY_BYTES="5000")
    seen = api(server, "POST", "/rooms/edits/messages", {"message": "seen"})["id"]
    ids = [api(server, "POST", "/rooms/edits/messages", {"message": f"missed {n}"})["id"] for n in range(20)]
    for n, message_id in enumerate(ids):
        api(server, "PATCH", f"/rooms/edits/messages/{message_id}", {"message": f"edited {n}"})
    client = connect(f"{server.ws_url}?room=edits&v={version}&name=back&since={seen}")
    client.welcome()
    client.send("live")
    replayed = []
    while (event := client.next())["state"] != 2 or event["message"] != "live":
        assert event.get("event") != "gap", event
        replayed.append(event["message"])
    assert replayed == [f"edited {n}" for n in range(20)]
