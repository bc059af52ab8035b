"""Hostile clients, finding 6: a client id belongs to its sender, so nobody can take another's."""

from __future__ import annotations

import json
import time

import jwt
import pytest

SECRET = "a-secret-for-tests-only-0123456789abcdef"


def frame(text: str, cid: str) -> str:
    """Return a v2 client frame."""
    return json.dumps({"text": text, "cid": cid})


def token(sub: str) -> str:
    """Return a token for sub."""
    return jwt.encode({"sub": sub, "name": sub.title(), "exp": int(time.time() + 60)}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("identified", [False, True])
def test_another_senders_cid_is_another_message(make_server, connect, identified):
    """Mallory's cid msg-1 does not swallow Alice's msg-1: Alice's message is delivered under an id of its own."""
    server = make_server(CHAT_JWT_SECRET=SECRET)
    query = (lambda who: f"&token={token(who)}") if identified else (lambda who: "")
    watcher = connect(server.ws_url + "?room=bank")
    watcher.welcome()
    mallory = connect(server.ws_url + "?room=bank&v=2" + query("mallory"))
    mallory.welcome()
    mallory.send(frame("mallory: hello", "msg-1"))
    first = mallory.next_where(lambda e: e["state"] == 5)
    alice = connect(server.ws_url + "?room=bank&v=2" + query("alice"))
    alice.welcome()
    alice.send(frame("alice: transfer approved", "msg-1"))
    second = alice.next_where(lambda e: e["state"] == 5)
    assert second["ack"] == "msg-1" and second["id"] != first["id"]
    seen = [event["message"] for event in watcher.chats(2)]
    assert seen == ["mallory: hello", "alice: transfer approved"]


def test_a_guest_key_keeps_a_cid_across_reconnects_and_only_its_own(make_server, connect):
    """A guest that reconnects with its key= is answered with its first id; another key's same cid is sent."""
    server = make_server()
    key = "a-guest-key-0123456789"
    first = connect(server.ws_url + f"?room=keys&v=2&key={key}")
    first.welcome()
    first.send(frame("once", "c-1"))
    acked = first.next_where(lambda e: e["state"] == 5)
    first.close()
    again = connect(server.ws_url + f"?room=keys&v=2&key={key}")
    again.welcome()
    again.send(frame("once", "c-1"))
    assert again.next_where(lambda e: e["state"] == 5) == acked
    other = connect(server.ws_url + "?room=keys&v=2&key=another-key-0123456789")
    other.welcome()
    other.send(frame("mine", "c-1"))
    assert other.next_where(lambda e: e["state"] == 5)["id"] != acked["id"]


def test_a_malformed_key_is_refused(make_server, connect):
    """key= must be 16-64 of A-Z a-z 0-9 _ -: anything else is refused with 1008."""
    server = make_server()
    assert connect(server.ws_url + "?v=2&key=short").close_code() == 1008
