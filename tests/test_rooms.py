"""Rooms, names, presence and resumable history against a real gunicorn server."""

from __future__ import annotations

import functools
import threading

import pytest
from conftest import Client


@pytest.fixture(params=["gthread", "gevent", "gthread-redis"])
def servers(request, make_server):
    """Start servers of each worker class, and on the Redis backend."""
    if request.param == "gthread-redis":
        url = request.getfixturevalue("clean_redis_url")
        return functools.partial(make_server, "gthread", CHAT_BACKEND_URL=url)
    return functools.partial(make_server, request.param)


@pytest.fixture
def busy_server(servers):
    """Start a server without a rate limit, so tests can send at full speed."""
    return servers(CHAT_RATE_LIMIT="off", CHAT_HISTORY_SIZE="1000")


def test_rooms_are_isolated(busy_server, connect):
    """A message reaches exactly the clients of its room."""
    red = connect(busy_server.ws_url + "?room=red")
    blue = connect(busy_server.ws_url + "?room=blue")
    red.send("for red")
    blue.send("for blue")
    assert red.next_where(lambda e: e["state"] == 2)["message"] == "for red"
    assert blue.next_where(lambda e: e["state"] == 2)["message"] == "for blue"
    red.send("red again")
    assert red.next_where(lambda e: e["state"] == 2)["message"] == "red again"
    blue.send("blue again")
    assert blue.next_where(lambda e: e["state"] == 2)["message"] == "blue again"


def test_name_is_carried_and_trimmed(busy_server, connect):
    """The name given on connect is trimmed and carried by every message and the welcome."""
    client = connect(busy_server.ws_url + "?name=%20%20Ada%20L.%20")
    welcome = client.next()
    assert welcome["event"] == "welcome" and welcome["you"] == "Ada L."
    client.send("hi")
    assert client.next_where(lambda e: e["state"] == 2)["name"] == "Ada L."


@pytest.mark.parametrize("query", ["name=" + "x" * 33, "name=bad%07bell", "room=" + "r" * 33, "since=abc"])
def test_bad_parameters_close_1008(busy_server, connect, query):
    """Names too long or with control characters, bad rooms and bad since values get 1008."""
    client = connect(f"{busy_server.ws_url}?{query}")
    assert client.close_code() == 1008


def test_welcome_lists_users_and_join_leave_reach_others(busy_server, connect):
    """The joining client gets the users online; the others get join and leave with counts."""
    alice = connect(busy_server.ws_url + "?room=tea&name=alice")
    assert alice.next()["users"] == ["alice"]
    bob = connect(busy_server.ws_url + "?room=tea&name=bob")
    welcome = bob.next()
    assert welcome["event"] == "welcome" and sorted(welcome["users"]) == ["alice", "bob"]
    assert welcome["online"] == 2
    joined = alice.next()
    assert (joined["event"], joined["name"], joined["online"]) == ("join", "bob", 2)
    bob.close()
    left = alice.next()
    assert (left["event"], left["name"], left["online"]) == ("leave", "bob", 1)


def test_presence_is_exact_after_churn(busy_server, connect):
    """After 100 clients join and leave, half cleanly and half by dropping the socket, online is exact."""
    url = busy_server.ws_url + "?room=churn"
    watcher = connect(url + "&name=watcher")
    watcher.next()
    clients = [Client(url + f"&name=c{n}") for n in range(100)]
    for client in clients:
        client.welcome()
    watcher.next_where(lambda e: e.get("online") == 101)
    for number, client in enumerate(clients):
        client.close() if number % 2 else client.drop()
    leaves = 0
    while leaves < 100:
        event = watcher.next()
        if event.get("event") == "leave":
            leaves += 1
    assert event["online"] == 1
    newcomer = connect(url + "&name=newcomer")
    welcome = newcomer.next()
    assert welcome["online"] == 2 and sorted(welcome["users"]) == ["newcomer", "watcher"]


def test_new_client_gets_recent_history_first(servers, connect):
    """A new client gets the last CHAT_HISTORY_REPLAY messages, oldest first, before live ones."""
    server = servers(CHAT_RATE_LIMIT="off", CHAT_HISTORY_REPLAY="5")
    sender = connect(server.ws_url + "?room=hist")
    for number in range(8):
        sender.send(f"m{number}")
    sender.chats(8)
    late = connect(server.ws_url + "?room=hist")
    assert late.next()["event"] == "welcome"
    assert [e["message"] for e in late.chats(5)] == ["m3", "m4", "m5", "m6", "m7"]
    sender.send("live")
    assert late.chats(1)[0]["message"] == "live"


def test_resume_with_since_misses_nothing_while_others_send(busy_server, connect):
    """A client that reconnects with since gets every message once, in order, while others send."""
    url = busy_server.ws_url + "?room=resume"
    reader = Client(url)
    reader.next()
    sender = connect(url + "&name=sender")
    total = 500
    done = threading.Event()

    def send_all() -> None:
        for number in range(total):
            sender.send(f"n{number}")
        done.set()

    seen: list[dict] = []
    thread = threading.Thread(target=send_all, name="resume-sender")
    thread.start()
    while len(seen) < 50:
        seen.append(reader.next_where(lambda e: e["state"] == 2))
    reader.drop()
    resumed = connect(f"{url}&since={seen[-1]['id']}")
    thread.join(60)
    assert done.is_set()
    while len(seen) < total:
        seen.append(resumed.next_where(lambda e: e["state"] == 2))
    assert [e["message"] for e in seen] == [f"n{number}" for number in range(total)]
    ids = [int(e["id"]) for e in seen]
    assert ids == sorted(set(ids))


def test_gap_is_announced_when_since_fell_out_of_the_window(servers, connect):
    """A since older than the history window gets a gap event with the count, then what is left."""
    server = servers(CHAT_RATE_LIMIT="off", CHAT_HISTORY_SIZE="10")
    sender = connect(server.ws_url + "?room=gap")
    sender.send("first")
    first = sender.chats(1)[0]
    for number in range(30):
        sender.send(f"g{number}")
    sender.chats(30)
    resumed = connect(f"{server.ws_url}?room=gap&since={first['id']}")
    assert resumed.next()["event"] == "welcome"
    gap = resumed.next()
    assert (gap["state"], gap["event"], gap["missed"]) == (3, "gap", 20)
    assert [e["message"] for e in resumed.chats(10)] == [f"g{n}" for n in range(20, 30)]


def test_since_from_before_a_restart_gets_a_gap_without_a_store(make_server, connect):
    """With CHAT_STORE_URL=none the memory backend forgets history on restart, and a resuming client is told so."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_STORE_URL="none")
    client = connect(server.ws_url + "?room=restart")
    client.send("before")
    before = client.chats(1)[0]
    client.close()
    server.restart()
    resumed = connect(f"{server.ws_url}?room=restart&since={before['id']}")
    assert resumed.next()["event"] == "welcome"
    gap = resumed.next()
    assert gap["event"] == "gap" and gap["missed"] is None
    resumed.send("after")
    after = resumed.chats(1)[0]
    assert int(after["id"]) > int(before["id"])


def test_since_beyond_the_newest_id_still_gets_live_messages(busy_server, connect):
    """A since larger than any id replays nothing and announces no gap, and live messages still arrive."""
    sender = connect(busy_server.ws_url + "?room=future")
    sender.send("before")
    newest = int(sender.chats(1)[0]["id"])
    client = connect(f"{busy_server.ws_url}?room=future&since={newest + 10**9}")
    assert client.next()["event"] == "welcome"
    sender.send("after")
    event = client.next_where(lambda e: e.get("state") in (2, 3) and e.get("event") != "join")
    assert event["state"] == 2 and event["message"] == "after"
