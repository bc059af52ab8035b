"""The @chat.on_message hook under gunicorn: change a message, drop it with a notice, survive a hook that raises.

The host app is tests/hosts.py:moderated, whose hook shouts "shout ..." (naming sender and room), drops spam,
raises on "boom" and numbers "count ..." by call.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Server, wait_for
from tokens import SECRET, mint


@pytest.fixture
def moderated(make_server) -> Callable[[], Server]:
    """Start hosts:moderated under gunicorn with the token secret."""
    return lambda: make_server(target="hosts:moderated", health="/chat/healthz", CHAT_JWT_SECRET=SECRET)


def socket_url(server: Server, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/chat/ws" + (f"?{query}" if query else "")


def test_the_hook_can_change_the_text_and_sees_who_sent_it(moderated, connect):
    """What the hook returns is what the room gets, and it is called with the sender's identity and room."""
    server = moderated()
    signed = connect(socket_url(server, f"room=loud&token={mint('u1', 'Ann')}"))
    guest = connect(socket_url(server, "room=loud&name=bo"))
    signed.welcome()
    guest.welcome()
    signed.send("shout hello")
    assert signed.chats(1)[0]["message"] == "HELLO (from u1/Ann in loud)"
    guest.send("shout hi")
    assert signed.chats(1)[0]["message"] == "HI (from None/bo in loud)"


def test_a_dropped_message_gets_a_rejected_notice_and_reaches_nobody(moderated, connect):
    """A hook that returns None drops the message; only the sender hears of it, as a state-4 rejected notice."""
    server = moderated()
    sender, reader = connect(socket_url(server)), connect(socket_url(server))
    sender.welcome()
    reader.welcome()
    sender.send("buy spam now")
    notice = sender.next_where(lambda e: e["state"] in (2, 4))
    assert notice["state"] == 4 and notice["code"] == "rejected" and notice["message"]
    sender.send("a fine message")
    assert reader.next_where(lambda e: e["state"] == 2)["message"] == "a fine message"
    assert not any(e.get("state") == 4 for e in reader.events)


def test_a_hook_that_raises_drops_the_message_and_logs_it(moderated, connect):
    """An exception in the hook drops that message with a logged error; the connection and the next message live."""
    server = moderated()
    client = connect(socket_url(server))
    client.welcome()
    client.send("boom")
    assert client.next_where(lambda e: e["state"] in (2, 4))["code"] == "rejected"
    client.send("after")
    assert client.next_where(lambda e: e["state"] == 2)["message"] == "after"
    wait_for(lambda: "RuntimeError: the moderation service is down" in server.log(), 10, "the logged failure")
    assert server.log().count("on_message failed") == 1


def test_the_hook_runs_once_per_message_whatever_the_room_size(moderated, connect):
    """Five clients in the room still mean one call per message."""
    server = moderated()
    clients = [connect(socket_url(server, "room=crowd")) for _ in range(5)]
    for client in clients:
        client.welcome()
    clients[0].send("count one")
    clients[1].send("count two")
    for client in clients:
        assert sorted(e["message"][-2:] for e in client.chats(2)) == ["#1", "#2"]
