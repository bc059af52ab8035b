"""The @chat.on_message hook: change a message, drop it with a notice, survive a hook that raises."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import jwt
import pytest
from flask import Flask
from served import Served

from chat import Chat, Identity

SECRET = "a-secret-for-tests-only-0123456789abcdef"


@pytest.fixture
def moderated() -> Iterator[Callable[[Callable], str]]:
    """Serve an app whose chat runs the given hook; return its socket URL."""
    served = Served()

    def start(hook: Callable) -> str:
        app = Flask("host")
        app.config["CHAT_JWT_SECRET"] = SECRET
        chat = Chat(app)
        chat.on_message(hook)
        return served.serve(app).replace("http:", "ws:", 1) + "/ws"

    yield start
    served.stop()


def test_the_hook_can_change_the_text_and_sees_who_sent_it(moderated, connect):
    """What the hook returns is what the room gets, and it is called with the sender's identity and room."""
    calls: list[tuple[Identity, str, str]] = []

    def shout(sender: Identity, room: str, text: str) -> str:
        calls.append((sender, room, text))
        return text.upper()

    url = moderated(shout)
    token = jwt.encode({"sub": "u1", "name": "Ann", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    signed, guest = connect(f"{url}?room=loud&token={token}"), connect(f"{url}?room=loud&name=bo")
    signed.welcome()
    guest.welcome()
    signed.send("hello")
    assert signed.chats(1)[0]["message"] == "HELLO"
    guest.send("hi")
    assert signed.chats(1)[0]["message"] == "HI"
    assert calls == [(Identity("u1", "Ann"), "loud", "hello"), (Identity(None, "bo"), "loud", "hi")]


def test_a_dropped_message_gets_a_rejected_notice_and_reaches_nobody(moderated, connect):
    """A hook that returns None drops the message; only the sender hears of it, as a state-4 rejected notice."""
    url = moderated(lambda sender, room, text: None if "spam" in text else text)
    sender, reader = connect(url), connect(url)
    sender.welcome()
    reader.welcome()
    sender.send("buy spam now")
    notice = sender.next_where(lambda e: e["state"] in (2, 4))
    assert notice["state"] == 4 and notice["code"] == "rejected" and notice["message"]
    sender.send("a fine message")
    assert reader.next_where(lambda e: e["state"] == 2)["message"] == "a fine message"
    assert not any(e.get("state") == 4 for e in reader.events)


def test_a_hook_that_raises_drops_the_message_and_logs_it(moderated, connect, caplog):
    """An exception in the hook drops that message with a logged error; the connection and the next message live."""
    logging.getLogger("chat").addHandler(caplog.handler)

    def flaky(sender: Identity, room: str, text: str) -> str:
        if text == "boom":
            raise RuntimeError("the moderation service is down")
        return text

    try:
        url = moderated(flaky)
        client = connect(url)
        client.welcome()
        client.send("boom")
        assert client.next_where(lambda e: e["state"] in (2, 4))["code"] == "rejected"
        client.send("after")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "after"
    finally:
        logging.getLogger("chat").removeHandler(caplog.handler)
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "on_message failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info[0] is RuntimeError


def test_the_hook_runs_once_per_message_whatever_the_room_size(moderated, connect):
    """Five clients in the room still mean one call per message."""
    calls: list[str] = []
    url = moderated(lambda sender, room, text: calls.append(text) or text)
    clients = [connect(url + "?room=crowd") for _ in range(5)]
    for client in clients:
        client.welcome()
    clients[0].send("one")
    clients[1].send("two")
    for client in clients:
        client.chats(2)
    assert sorted(calls) == ["one", "two"]
