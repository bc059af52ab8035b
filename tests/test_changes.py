"""Messages that change (protocol v3): edits, deletes, reactions and replies, in the room's order, on every backend."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable

import jwt
import psycopg
import pytest
import redis
from conftest import Client, Server
from flask import Flask
from postgres_server import clean_postgres_url, postgres_url  # noqa: F401  (fixtures)
from served import Served, on_each_worker

from chat import Chat

SECRET = "a-jwt-secret-for-the-changes-tests-0123456789"
KEY = "changes-api-key-0123456789"


def mint(sub: str, name: str) -> str:
    """Return a token for sub named name."""
    return jwt.encode({"sub": sub, "name": name, "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")


@pytest.fixture(params=["memory", "redis", "redis-postgres"])
def chat(request, make_server) -> Server:
    """Start a chat on memory (one worker), or a real redis-server (two workers) with SQLite or PostgreSQL."""
    env = {"CHAT_JWT_SECRET": SECRET, "CHAT_API_KEY": KEY, "CHAT_HEARTBEAT_INTERVAL": "60"}
    if request.param == "redis-postgres":
        env["CHAT_STORE_URL"] = request.getfixturevalue("clean_postgres_url")
    if request.param != "memory":
        url = request.getfixturevalue("clean_redis_url")
        return make_server(workers=2, CHAT_BACKEND_URL=url, **env)
    return make_server(**env)


def stored(server: Server) -> list[tuple]:
    """Return the body and state of every message in the server's store (SQLite or PostgreSQL)."""
    url = server.env["CHAT_STORE_URL"]
    statement = "SELECT body, coalesce(state, '') FROM chat_messages"
    if url.startswith("postgres"):
        with psycopg.connect(url) as db:
            return db.execute(statement).fetchall()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return db.execute(statement).fetchall()


def join(connect: Callable[..., Client], server: Server, who: str | None = None, room: str = "r", v: int = 3,
         since: str | None = None) -> Client:
    """Open a v3 (or v) client in room as user who (a guest when None), read past its welcome and replay."""
    query = f"room={room}&v={v}"
    if who is not None:
        query += f"&token={mint(who, who.title())}"
    if since is not None:
        query += f"&since={since}"
    client = connect(f"{server.ws_url}?{query}")
    client.welcome()
    return client


def send(client: Client, **frame: object) -> None:
    """Send a JSON frame."""
    client.send(json.dumps(frame))


def said(client: Client, text: str, cid: str) -> str:
    """Send a message with cid and return its id from the ack."""
    send(client, text=text, cid=cid)
    return client.next_where(lambda e: e.get("state") == 5 and e.get("ack") == cid)["id"]


def api(server: Server, method: str, path: str, body: object = None) -> tuple[int, dict]:
    """Call the HTTP API with the key; return the status and the JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + "/api" + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def history(server: Server, room: str = "r", query: str = "") -> list[dict]:
    """Return the room's history through the API."""
    status, body = api(server, "GET", f"/rooms/{room}/messages{query}")
    assert status == 200, body
    return body["messages"]


def replayed(connect, server: Server, room: str = "r", v: int = 3, since: str | None = None) -> list[dict]:
    """Join room afresh and return what its replay holds (messages and changes), up to a marker message."""
    marker = f"marker-{time.monotonic_ns()}"
    poster = join(connect, server, "zed", room)
    client = join(connect, server, None, room, v, since)
    poster.send(marker)
    events = []
    while True:
        event = client.next_where(lambda e: e.get("state") in (2, 6))
        if event.get("message") == marker:
            return events
        if not event.get("message", "").startswith("marker-"):
            events.append(event)


def test_edit_delete_and_react_reach_v3_clients_as_changes_in_order(chat, connect):
    """Each accepted change reaches the room's v3 clients as a state-6 event with its own id, acked by cid."""
    alice, bob = join(connect, chat, "alice"), join(connect, chat, "bob")
    first = said(alice, "helo", "m1")
    send(alice, type="edit", id=first, text="hello", cid="e1")
    ack = alice.next_where(lambda e: e.get("state") == 5 and e.get("ack") == "e1")
    for client, cid in ((bob, "r1"), (alice, "r2"), (bob, "r3")):
        send(client, type="react", id=first, emoji="👍", cid=cid)
        client.next_where(lambda e, cid=cid: e.get("ack") == cid)
    send(alice, type="delete", id=first, cid="d1")
    bob.next_where(lambda e: e.get("kind") == "delete")
    changes = [e for e in bob.events if e.get("state") == 6]
    assert [c["kind"] for c in changes] == ["edit", "react", "react", "react", "delete"]
    assert changes[0]["text"] == "hello" and changes[0]["id"] == ack["id"] and changes[0]["target"] == first
    assert [(c["user"], c["on"]) for c in changes[1:4]] == [("bob", True), ("alice", True), ("bob", False)]
    assert all(c["message"] == "" and c["room"] == "r" for c in changes)
    ids = [int(c["id"]) for c in changes]
    assert ids == sorted(ids) and int(first) < ids[0]


def test_refusals_carry_the_cid(chat, connect):
    """A guest, another author, an unknown or deleted id, a blank edit and a bad emoji are refused with cid."""
    alice, bob, guest = join(connect, chat, "alice"), join(connect, chat, "bob"), join(connect, chat)
    first = said(alice, "mine", "m1")

    def refused(client: Client, code: str, cid: str, **frame: object) -> None:
        send(client, cid=cid, **frame)
        notice = client.next_where(lambda e: e.get("state") == 4)
        assert (notice["code"], notice.get("cid")) == (code, cid)

    refused(guest, "forbidden", "g1", type="edit", id=first, text="x")
    refused(guest, "forbidden", "g2", type="react", id=first, emoji="👍")
    refused(bob, "forbidden", "b1", type="edit", id=first, text="x")
    refused(bob, "forbidden", "b2", type="delete", id=first)
    refused(alice, "empty", "a1", type="edit", id=first, text="  ")
    refused(alice, "invalid", "a2", type="react", id=first, emoji="")
    refused(alice, "invalid", "a3", type="react", id=first, emoji="x" * 17)
    refused(alice, "not_found", "a4", type="edit", id="12345", text="x")
    refused(alice, "invalid", "a5", type="frobnicate", id=first)
    refused(alice, "not_found", "a6", text="reply", reply_to="12345")
    send(alice, type="delete", id=first, cid="a7")
    alice.next_where(lambda e: e.get("state") == 5 and e.get("ack") == "a7")
    refused(alice, "not_found", "a8", type="edit", id=first, text="x")
    refused(bob, "not_found", "a9", type="react", id=first, emoji="👍")
    refused(bob, "not_found", "a10", text="reply", reply_to=first)


def test_an_edit_over_the_size_limit_closes_1009(make_server, connect):
    """An edit frame over CHAT_MAX_MESSAGE_BYTES closes the connection with 1009, as a message does."""
    server = make_server(CHAT_JWT_SECRET=SECRET, CHAT_MAX_MESSAGE_BYTES="100")
    alice = join(connect, server, "alice")
    first = said(alice, "short", "m1")
    send(alice, type="edit", id=first, text="x" * 200)
    assert alice.close_code() == 1009


def test_v1_and_v2_clients_see_no_change_events(chat, connect):
    """Changes go to v3 clients only: v1 and v2 clients get the messages around them and nothing else."""
    old, older = join(connect, chat, "carol", v=2), join(connect, chat, None, v=1)
    alice = join(connect, chat, "alice")
    first = said(alice, "one", "m1")
    send(alice, type="edit", id=first, text="uno", cid="e1")
    alice.next_where(lambda e: e.get("ack") == "e1")
    alice.send("two")
    for client in (old, older):
        seen = [client.next_where(lambda e: e.get("state") in (2, 6)) for _ in range(2)]
        assert [e["message"] for e in seen] == ["one", "two"]


def test_replies_carry_reply_to(chat, connect):
    """A message with reply_to carries it in its frame, live and in history."""
    alice, bob = join(connect, chat, "alice"), join(connect, chat, "bob")
    first = said(alice, "question", "m1")
    send(bob, text="answer", cid="m2", reply_to=first)
    reply = alice.next_where(lambda e: e.get("message") == "answer")
    assert reply["reply_to"] == first
    assert [m.get("reply_to") for m in history(chat)[-2:]] == [None, first]


def test_history_and_a_fresh_join_give_folded_messages(chat, connect):
    """History and a join without since give each message as it stands, and no change events."""
    alice, bob = join(connect, chat, "alice"), join(connect, chat, "bob")
    one, two, three = (said(alice, text, f"m{n}") for n, text in enumerate(["one", "two", "three"]))
    for frame in ({"type": "edit", "id": one, "text": "ONE"}, {"type": "delete", "id": two},
                  {"type": "react", "id": three, "emoji": "🎉"}):
        send(alice, cid="c-" + frame["type"], **frame)
        alice.next_where(lambda e, cid="c-" + frame["type"]: e.get("ack") == cid)
    send(bob, type="react", id=three, emoji="🎉", cid="rb")
    bob.next_where(lambda e: e.get("ack") == "rb")
    expected = [("ONE", True, None, None), ("", None, True, None), ("three", None, None, {"🎉": ["alice", "bob"]})]

    def shape(messages: list[dict]) -> list[tuple]:
        return [(m["message"], bool(m.get("edited")) or None, m.get("deleted"), m.get("reactions")) for m in messages]

    assert shape(history(chat)) == expected
    fresh = replayed(connect, chat)
    assert all(e["state"] == 2 for e in fresh)
    assert shape(fresh) == expected
    v1 = replayed(connect, chat, v=1)
    assert [e["message"] for e in v1] == ["ONE", "three"]


def test_a_resume_gets_messages_as_they_stand_and_the_changes_after_since(chat, connect):
    """A resume from since replays the log after it in order: folded messages and the change events, once each."""
    alice = join(connect, chat, "alice")
    zero = said(alice, "zero", "m0")
    one = said(alice, "one", "m1")
    send(alice, type="edit", id=zero, text="ZERO", cid="e0")
    send(alice, type="edit", id=one, text="ONE", cid="e1")
    send(alice, type="react", id=one, emoji="👍", cid="r1")
    alice.next_where(lambda e: e.get("ack") == "r1")
    events = replayed(connect, chat, since=zero)
    assert [(e["state"], e.get("kind"), e.get("text", e["message"])) for e in events] == [
        (2, None, "ONE"), (6, "edit", "ZERO"), (6, "edit", "ONE"), (6, "react", "")]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # A since that names a change.
    after = replayed(connect, chat, since=events[1]["id"])
    assert [e.get("kind") for e in after] == ["edit", "react"]


def test_the_api_key_edits_and_deletes_any_message(chat, connect):
    """PATCH and DELETE /api/rooms/<room>/messages/<id> change anyone's message, as user null; unknown ids are 404."""
    alice, bob = join(connect, chat, "alice"), join(connect, chat, "bob")
    first = said(alice, "rude", "m1")
    status, body = api(chat, "PATCH", f"/rooms/r/messages/{first}", {"message": "polite", "name": "mod"})
    assert status == 200 and body["target"] == first
    edit = bob.next_where(lambda e: e.get("state") == 6)
    assert (edit["kind"], edit["text"], edit["user"], edit["name"], edit["id"]) == ("edit", "polite", None, "mod",
                                                                                    body["id"])
    status, body = api(chat, "DELETE", f"/rooms/r/messages/{first}")
    assert status == 200
    delete = bob.next_where(lambda e: e.get("state") == 6)
    assert (delete["kind"], delete["user"], delete["name"]) == ("delete", None, "moderator")
    assert api(chat, "DELETE", f"/rooms/r/messages/{first}")[0] == 404
    assert api(chat, "PATCH", "/rooms/r/messages/123", {"message": "x"})[0] == 404
    assert api(chat, "PATCH", f"/rooms/r/messages/{first}", {"message": " "})[0] == 400
    assert api(chat, "PATCH", f"/rooms/r/messages/{first}", {"message": "\ud800"})[0] == 400, "an edit is a message"
    assert api(chat, "DELETE", "/rooms/r/messages/not-an-id")[0] == 400


def test_export_then_erase_leaves_the_text_nowhere(chat, connect):
    """Exported newest first, then erased: the text is not in the store, the stream, a join, history or a resume."""
    alice, bob = join(connect, chat, "alice"), join(connect, chat, "bob")
    secrets = [said(alice, f"secret-{n}", f"s{n}") for n in range(3)]
    kept = said(bob, "bob stays", "b1")
    send(alice, type="edit", id=secrets[0], text="secret-edited", cid="e")
    alice.next_where(lambda e: e.get("ack") == "e")
    status, body = api(chat, "GET", "/users/alice/messages?limit=2")
    assert status == 200 and body["more"] is True
    assert [m["message"] for m in body["messages"]] == ["secret-2", "secret-1"]
    assert all(m["room"] == "r" and m["user"] == "alice" for m in body["messages"])
    older = api(chat, "GET", f"/users/alice/messages?before={body['messages'][-1]['id']}")[1]
    assert [m["message"] for m in older["messages"]] == ["secret-edited"] and older["more"] is False
    status, body = api(chat, "DELETE", "/users/alice/messages")
    assert (status, body["deleted"]) == (200, 3)
    deleted = [bob.next_where(lambda e: e.get("kind") == "delete")["target"] for _ in range(3)]
    assert sorted(deleted) == sorted(secrets)
    exported = api(chat, "GET", "/users/alice/messages")[1]["messages"]
    assert [(m["message"], m.get("deleted")) for m in exported] == [("", True)] * 3

    def shows_secret(events: list[dict]) -> bool:
        return "secret" in json.dumps(events)

    assert not shows_secret(history(chat))
    assert not shows_secret(replayed(connect, chat))
    assert not shows_secret(replayed(connect, chat, since=str(int(secrets[0]) - 1)))
    assert kept in [m["id"] for m in history(chat)]
    rows = stored(chat)
    assert rows and not shows_secret(rows)
    if "CHAT_BACKEND_URL" in chat.env:
        client = redis.Redis.from_url(chat.env["CHAT_BACKEND_URL"])
        assert not shows_secret([repr(client.xrange(key)) for key in client.scan_iter("chat:*:log")])
        assert not shows_secret([repr(client.hgetall(key)) for key in client.scan_iter("chat:*:states")])


def test_python_edits_and_deletes_and_the_hook_sees_edits(connect):
    """chat.edit_message and chat.delete_message change any message; on_message vets a client's edits."""
    served = Served()
    app = Flask("host")
    app.config.update(CHAT_JWT_SECRET=SECRET, CHAT_HEARTBEAT_INTERVAL=60)
    chat = Chat(app)
    seen: list[str] = []

    @chat.on_message
    def vet(sender, room, text):
        seen.append(text)
        return None if "bad" in text else text.replace("darn", "d***")

    url = served.serve(app).replace("http:", "ws:", 1) + "/ws"
    try:
        alice = connect(f"{url}?room=p&v=3&token={mint('alice', 'Alice')}")
        alice.welcome()
        first = said(alice, "hello", "m1")
        send(alice, type="edit", id=first, text="darn it", cid="e1")
        assert alice.next_where(lambda e: e.get("state") == 6)["text"] == "d*** it"
        send(alice, type="edit", id=first, text="bad words", cid="e2")
        assert alice.next_where(lambda e: e.get("state") == 4) == {
            "state": 4, "code": "rejected", "message": "your edit was not accepted", "cid": "e2"}
        assert seen == ["hello", "darn it", "bad words"]
        with app.app_context():
            edited = chat.edit_message("p", first, "by python", name="ops")
            assert alice.next_where(lambda e: e.get("state") == 6)["id"] == edited["id"]
            chat.delete_message("p", int(first))
            assert alice.next_where(lambda e: e.get("state") == 6)["kind"] == "delete"
            with pytest.raises(LookupError):
                chat.delete_message("p", first)
            assert chat.history("p")[-1]["deleted"] is True
    finally:
        served.stop()


# Timed against a worker being respawned: under load it waited past its bound, so make test runs it alone.
@pytest.mark.alone
def test_changes_keep_their_order_across_a_worker_kill(make_server, connect, clean_redis_url):
    """A client whose worker is killed resumes from its last id on another: the messages as they stand and the
    changes made meanwhile, in order, once each; then live traffic."""
    server = make_server(workers=2, CHAT_BACKEND_URL=clean_redis_url, CHAT_JWT_SECRET=SECRET,
                         CHAT_HEARTBEAT_INTERVAL="60")
    alice, bob = on_each_worker(server, lambda n: join(connect, server, ["alice", "bob"][n], "k"))
    zero = said(alice, "zero", "m0")
    assert bob.next_where(lambda e: e.get("state") == 2)["id"] == zero
    os.kill(server.worker_pids()[1], signal.SIGKILL)
    one = said(alice, "one", "m1")
    frames = ({"type": "edit", "id": zero, "text": "ZERO"}, {"type": "react", "id": one, "emoji": "🙂"},
              {"type": "delete", "id": zero}, {"type": "edit", "id": one, "text": "ONE"})
    for n, frame in enumerate(frames):
        send(alice, cid=f"c{n}", **frame)
        alice.next_where(lambda e, n=n: e.get("ack") == f"c{n}")
    back = replayed(connect, server, "k", since=zero)
    assert [(e["state"], e.get("kind"), e.get("text", e["message"])) for e in back] == [
        (2, None, "ONE"), (6, "react", ""), (6, "delete", ""), (6, "edit", "ONE")]
    assert back[0]["reactions"] == {"🙂": ["alice"]} and back[0]["edited"]
    ids = [int(e["id"]) for e in back]
    assert ids == sorted(set(ids))


def test_history_after_since_carries_the_changes_in_order_and_counts_messages(chat, connect):
    """GET messages?since= gives the messages after it (as they stand) and the changes among them, in order; its
    limit counts messages, not changes."""
    alice = join(connect, chat, "alice")
    zero = said(alice, "zero", "m0")
    one = said(alice, "one", "m1")
    send(alice, type="react", id=zero, emoji="👍", cid="r0")
    alice.next_where(lambda e: e.get("ack") == "r0")
    said(alice, "two", "m2")
    page = api(chat, "GET", f"/rooms/r/messages?since={zero}&limit=1")[1]
    assert [(m["state"], m.get("kind"), m["message"]) for m in page["messages"]] == [(2, None, "one"), (6, "react", "")]
    assert page["more"] is True and page["messages"][0]["id"] == one
