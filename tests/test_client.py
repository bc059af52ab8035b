"""The Python client (chat.client) against real servers: acks, presence, the outbox across restarts, history, v3."""

from __future__ import annotations

import time

import jwt
import pytest
from flask import Flask

from chat import Chat
from chat.client import Client, Closed, Refused
from chat.testing import Served, chat_server  # noqa: F401  (the kit's fixture, used as the host's would)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def mint(user: str, name: str | None = None) -> str:
    """Return a JWT for user, signed with the test secret."""
    return jwt.encode({"sub": user, "name": name or user.title(), "exp": int(time.time()) + 3600}, SECRET, "HS256")


@pytest.fixture
def served(chat_server, tmp_path) -> Served:  # noqa: F811
    """Serve a host app with its chat at /chat, JWTs on and no rate limit."""
    app = Flask("host")
    app.config.update(CHAT_JWT_SECRET=SECRET, CHAT_RATE_LIMIT="off", CHAT_HEARTBEAT_INTERVAL=0.5,
                      CHAT_STORE_URL=f"sqlite:///{tmp_path / 'chat.db'}")
    Chat(app, url_prefix="/chat")
    return chat_server(app)


def texts(frames: list[dict]) -> list[str]:
    """Return the text of each chat message among frames."""
    return [frame["message"] for frame in frames]


def messages(client: Client, until: str, timeout: float = 30) -> list[dict]:
    """Read frames until the chat message until came, and return the messages up to it."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1]["message"] != until:
        seen.append(client.wait(lambda frame: frame.get("state") == 2, timeout=deadline - time.monotonic()))
    return seen


def test_send_returns_the_id_and_every_client_gets_the_message_once(served):
    """send() returns the acked id; both clients get the message once, with that id."""
    ana, bo = served.client("acks", name="ana"), served.client("acks", name="bo")
    message_id = ana.send("hello bo")
    assert message_id.isdigit()
    ana.send("end")
    got, _ = messages(bo, "end")
    assert (got["message"], got["id"], got["name"]) == ("hello bo", message_id, "ana")
    assert [frame["id"] for frame in messages(ana, "end")][:1] == [message_id]


def test_presence_lists_and_follows_who_is_online(served):
    """The welcome lists who is here; joins and leaves (digests) keep users and online current."""
    first = served.client("people", name="first")
    assert first.users == ["first"] and first.online == 1
    second = served.client("people", name="second")
    assert sorted(second.users) == ["first", "second"]
    first.wait(lambda frame: "second" in first.users and first.online == 2)
    second.close()
    first.wait(lambda frame: "second" not in first.users and first.online == 1)


def test_a_refused_message_raises_with_its_code(served):
    """A blank message raises Refused("empty") and is not sent again; the next one goes through."""
    client = served.client("refusals", name="rita")
    with pytest.raises(Refused) as refused:
        client.send("   ")
    assert refused.value.code == "empty"
    assert client.send("fine").isdigit()


def test_messages_refused_by_the_rate_limit_are_sent_again_once_each(chat_server, tmp_path):  # noqa: F811
    """Five messages in a burst against a limit of 1/s (burst 2): refused for now, sent again, each stored once."""
    app = Flask("host")
    app.config.update(CHAT_RATE_LIMIT="1,2", CHAT_STORE_URL=f"sqlite:///{tmp_path / 'chat.db'}")
    Chat(app)
    client = chat_server(app).client("limited", name="quick")
    sent = ["one", "two", "three", "four", "five"]
    ids = [entry.result(timeout=30) for entry in [client.queue(text) for text in sent]]
    assert len(set(ids)) == len(sent)
    assert "rate_limited" in [frame.get("code") for frame in client.frames(timeout=0)]
    assert [frame["message"] for frame in client.history(limit=10)["messages"]] == sent


def test_v3_calls_are_refused_on_v2(served):
    """A v2 client refuses replies, changes, reads and typing instead of sending them as text."""
    client = Client(served.ws_url, "old", version=2)
    for call in (lambda: client.send("x", reply_to="1"), lambda: client.edit("1", "x"), client.typing):
        with pytest.raises(ValueError):
            call()


def test_a_final_close_raises_closed(served):
    """A name the server refuses closes with 1008: connect raises Closed and the client does not retry."""
    with pytest.raises(Closed) as closed:
        served.client("lobby", name="bell\x07")
    assert closed.value.code == 1008


def test_history_pages_back_to_the_first_message(served):
    """history() pages back with before= until more is false, and forward with since=."""
    client = served.client("paged", name="pager")
    sent = [f"line {number}" for number in range(25)]
    for text in sent:
        client.send(text)
    page = client.history(limit=10)
    seen = [frame["message"] for frame in page["messages"]]
    while page["more"]:
        page = client.history(limit=10, before=page["messages"][0]["id"])
        seen[:0] = [frame["message"] for frame in page["messages"]]
    assert seen == sent
    newer = client.history(since=page["messages"][4]["id"], limit=3)
    assert [frame["message"] for frame in newer["messages"]] == ["line 5", "line 6", "line 7"]
    nothing = client.history(limit=0)
    assert (nothing["messages"], nothing["more"]) == ([], True)


@pytest.mark.slow
def test_ten_messages_queued_while_the_server_is_down_are_sent_once_each(make_server):
    """Ten messages queued while the server is down are acked once it is back, and stored once each."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_HEARTBEAT_INTERVAL="0.5")
    with Client(server.ws_url, "offline", name="writer", timeout=3) as writer:
        server.stop()
        queued = [writer.queue(f"queued {number}") for number in range(10)]
        server.start()
        ids = [entry.result(timeout=30) for entry in queued]
        assert len(set(ids)) == 10
        stored = writer.history(limit=50)["messages"]
    assert [frame["message"] for frame in stored] == [f"queued {number}" for number in range(10)]


@pytest.mark.slow
def test_a_restart_is_resumed_with_since_without_gap_or_duplicate(make_server):
    """A reader across a server restart gets every message once, in order, resuming after its last id."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_HEARTBEAT_INTERVAL="0.5")
    with Client(server.ws_url, "restart", name="reader", timeout=3) as reader, \
            Client(server.ws_url, "restart", name="writer", timeout=3) as writer:
        writer.send("before")
        seen = messages(reader, "before")
        server.stop()
        during = [writer.queue(f"during {number}") for number in (1, 2, 3)]
        server.start()
        for entry in during:
            entry.result(timeout=30)
        writer.send("after")
        seen += messages(reader, "after")
        assert texts(seen) == ["before", "during 1", "during 2", "during 3", "after"]
        assert len({frame["id"] for frame in seen}) == 5
        assert reader.last_id == int(seen[-1]["id"])


def test_v3_typing_and_read_receipts(served):
    """typing() reaches the room's other users; read() moves the position and tells the others."""
    ana = served.client("den", token=mint("ana"))
    bo = served.client("den", token=mint("bo"))
    assert "read" in bo.welcome and "unread" in bo.welcome and bo.welcome["private"] is False
    assert ana.typing()
    typing = bo.wait(lambda frame: frame.get("event") == "typing")
    assert (typing["user"], typing["name"]) == ("ana", "Ana")
    message_id = bo.send("read me")
    assert ana.read(message_id)
    receipt = bo.wait(lambda frame: frame.get("event") == "read")
    assert (receipt["user"], receipt["id"]) == ("ana", message_id)


def test_v3_a_dm_is_one_room_from_either_side(served):
    """dm= opens the DM's room: what one side sends the other gets, from either side's client."""
    ana = served.client(dm="bo", token=mint("ana"))
    assert ana.room.startswith("dm-") and ana.welcome["dm"] == "bo"
    message_id = ana.send("psst")
    bo = served.client(dm="ana", token=mint("bo"))
    assert bo.room == ana.room
    assert [frame["id"] for frame in bo.history()["messages"]] == [message_id]


def test_v3_reply_edit_react_and_delete(served):
    """A reply carries reply_to; edit, react and delete are acked changes every client gets as state 6, in order."""
    ana = served.client("changes", token=mint("ana"))
    bo = served.client("changes", token=mint("bo"))
    first = ana.send("first")
    reply = bo.send("a reply", reply_to=first)
    got = ana.wait(lambda frame: frame.get("state") == 2 and frame["id"] == reply)
    assert got["reply_to"] == first
    edit = ana.edit(first, "first, edited")
    react = bo.react(first, "👍")
    delete = ana.delete(first)
    changes = [bo.wait(lambda frame: frame.get("state") == 6) for _ in range(3)]
    assert [(change["kind"], change["id"], change["target"]) for change in changes] == [
        ("edit", edit, first), ("react", react, first), ("delete", delete, first)]
    assert changes[0]["text"] == "first, edited" and changes[1]["emoji"] == "👍"
    with pytest.raises(Refused) as refused:
        bo.edit(reply, "")
    assert refused.value.code == "empty"
    with pytest.raises(Refused) as refused:
        bo.delete(first)
    assert refused.value.code in ("forbidden", "not_found")
