"""Conversations on two gunicorn workers sharing Redis: removals, bans, mutes, receipts, typing and the offline hook
reach every worker; and conversations under the gevent worker."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import wait_for
from served import on_each_worker
from test_conversations import closed_within
from tokens import API_KEY, SECRET, mint
from wsclient import Client


def call(server, method: str, path: str, body: object = None) -> tuple[int, dict]:
    """Call server's API with the key and return (status, JSON body)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}/api{path}", data=data, method=method,
                                     headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.load(response)


@pytest.fixture
def two_workers(make_server, clean_redis_url):
    """Start two gthread workers sharing a clean Redis, with the API key and JWTs."""
    return make_server(workers=2, CHAT_BACKEND_URL=clean_redis_url, CHAT_API_KEY=API_KEY, CHAT_JWT_SECRET=SECRET,
                       CHAT_RATE_LIMIT="off")


def on_both(server, connect, user: str, query: str, version: int = 3) -> list[Client]:
    """Open one welcomed client of user on each worker."""

    def opened(_: int) -> Client:
        client = connect(f"{server.ws_url}?v={version}&{query}&token={mint(user, name=user.title())}")
        client.welcome()
        return client

    return on_each_worker(server, opened)


def test_removal_and_ban_close_sockets_on_every_worker(two_workers, connect):
    """A member removed from a private room, and a user banned from an open one, are closed on both workers in 2 s."""
    server = two_workers
    call(server, "PUT", "/rooms/team", {"private": True, "members": ["ana", "bo"]})
    members = on_both(server, connect, "bo", "room=team")
    lobby = on_both(server, connect, "cy", "room=lobby", version=1)
    call(server, "DELETE", "/rooms/team/members/bo")
    call(server, "PUT", "/rooms/lobby/bans/cy")
    assert [closed_within(client, 2) for client in members] == [(4403, "removed")] * 2
    assert [closed_within(client, 2) for client in lobby] == [(4403, "banned")] * 2
    for query, user, reason in (("room=team", "bo", "not a member"), ("room=lobby", "cy", "banned")):
        client = connect(f"{server.ws_url}?v=3&{query}&token={mint(user)}")
        assert closed_within(client, 5) == (4403, reason)


def test_a_mute_reaches_every_worker(two_workers, connect):
    """Once muted, the user's messages are dropped on both workers (each worker's copy of the room is renewed)."""
    server = two_workers
    listeners = on_both(server, connect, "ana", "room=hall")
    talkers = on_both(server, connect, "bo", "room=hall")
    for n, talker in enumerate(talkers):
        talker.send(json.dumps({"text": f"before {n}", "cid": f"b{n}"}))
        assert talker.next_where(lambda e: e["state"] in (4, 5))["state"] == 5
    call(server, "PUT", "/rooms/hall/mutes/bo")
    for n, talker in enumerate(talkers):
        talker.send(json.dumps({"text": f"muted {n}", "cid": f"m{n}"}))
        notice = talker.next_where(lambda e: e["state"] in (4, 5))
        assert (notice["state"], notice["code"], notice["cid"]) == (4, "muted", f"m{n}")
    listeners[0].send(json.dumps({"text": "still here", "cid": "s"}))
    for client in (*listeners, *talkers):
        assert client.next_where(lambda e: e["state"] == 2 and e["message"].startswith("still"))


def test_receipts_and_typing_cross_workers_to_v3_only(two_workers, connect):
    """A read and typing on one worker reach v3 clients on the other; v1 and v2 clients there see neither."""
    server = two_workers
    readers = on_both(server, connect, "ana", "room=den")
    watchers = on_both(server, connect, "bo", "room=den")
    old = on_both(server, connect, "cy", "room=den", version=1) + on_both(server, connect, "dee", "room=den", 2)
    readers[0].send(json.dumps({"text": "read me", "cid": "r"}))
    marker = readers[0].next_where(lambda e: e["state"] == 5)["id"]
    watchers[1].send(json.dumps({"type": "read", "id": marker}))
    watchers[1].send(json.dumps({"type": "typing"}))
    for client in readers:
        assert client.next_where(lambda e: e.get("event") == "read")["id"] == marker
        assert client.next_where(lambda e: e.get("event") == "typing")["user"] == "bo"
    readers[1].send(json.dumps({"text": "end", "cid": "e"}))
    for client in old:
        client.next_where(lambda e: e["state"] == 2 and e["message"] == "end")
        assert not [e for e in client.events if e.get("event") in ("read", "typing")]


# A reload must come back within the grace (3 s, not 1: under load it was not back within 1): run alone.
@pytest.mark.alone
@pytest.mark.slow
def test_the_offline_hook_runs_once_across_workers_and_not_on_a_reload(make_server, connect, clean_redis_url,
                                                                       tmp_path: Path):
    """A user on both workers leaves: one call, after the grace; a reload within the grace makes none."""
    log = tmp_path / "offline.log"
    server = make_server(workers=2, target="offline_app:app", CHAT_BACKEND_URL=clean_redis_url,
                         CHAT_API_KEY=API_KEY, CHAT_JWT_SECRET=SECRET, CHAT_OFFLINE_GRACE="3",
                         CHAT_TEST_OFFLINE_LOG=str(log))
    call(server, "PUT", "/rooms/team", {"private": True, "members": ["ana", "bo"]})
    bo = connect(f"{server.ws_url}?v=3&room=team&token={mint('bo')}")
    bo.welcome()
    bo.send(json.dumps({"text": "ping ana", "cid": "p"}))
    bo.next_where(lambda e: e["state"] == 5)
    tabs = on_both(server, connect, "ana", "room=team")
    for tab in tabs:
        tab.close()
    # A reload: back well within the grace, on a fresh connection.
    again = connect(f"{server.ws_url}?v=3&room=team&token={mint('ana')}")
    again.welcome()
    # A call that should not come can only be seen not to come by waiting: past the grace.
    time.sleep(4)
    assert not log.exists()
    again.close()
    wait_for(log.exists, 10, "the offline hook")
    # The other worker, had it called too, would have within a grace of the first.
    time.sleep(4)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["user"], c["unread"]) for c in calls] == [("ana", {"team": 1})]


def test_conversations_under_gevent(make_server, connect):
    """Under the gevent worker: a DM from both sides, a third user refused, a receipt and typing, a removal."""
    server = make_server("gevent", CHAT_API_KEY=API_KEY, CHAT_JWT_SECRET=SECRET, CHAT_RATE_LIMIT="off")
    ana = connect(f"{server.ws_url}?v=3&dm=bo&token={mint('ana')}")
    bo = connect(f"{server.ws_url}?v=3&dm=ana&token={mint('bo')}")
    room = ana.welcome()["room"]
    assert bo.welcome()["room"] == room
    assert closed_within(connect(f"{server.ws_url}?v=3&room={room}&token={mint('cy')}"), 5) == (4403, "not a member")
    ana.send(json.dumps({"text": "hi", "cid": "h"}))
    posted = ana.next_where(lambda e: e["state"] == 5)["id"]
    bo.send(json.dumps({"type": "read", "id": posted}))
    bo.send(json.dumps({"type": "typing"}))
    assert ana.next_where(lambda e: e.get("event") == "read")["user"] == "bo"
    assert ana.next_where(lambda e: e.get("event") == "typing")["user"] == "bo"
    call(server, "PUT", "/rooms/team", {"private": True, "members": ["ana"]})
    member = connect(f"{server.ws_url}?v=3&room=team&token={mint('ana')}")
    member.welcome()
    call(server, "DELETE", "/rooms/team/members/ana")
    assert closed_within(member, 2) == (4403, "removed")
