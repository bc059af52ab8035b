"""Protocol v3's conversations on one server: private rooms, DMs, bans, mutes, reads, receipts, typing, bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import Client, Closed, wait_for
from flask import Flask
from served import Served
from test_api import KEY, SECRET, Api, mint

from chat import Chat, protocol
from chat.rooms.membership import dm_room


@pytest.fixture
def served() -> Iterator[Served]:
    """Serve apps in this process and stop them after the test."""
    running = Served()
    yield running
    running.stop()


@pytest.fixture(params=["memory", "redis"])
def chat_server(served, request) -> Callable[..., tuple[Chat, Api, str]]:
    """Start an app with a chat at /chat, the API key and JWTs, on the memory backend or a real Redis; return the
    Chat, an API caller and the socket URL."""
    backend = {"CHAT_BACKEND_URL": request.getfixturevalue("clean_redis_url")} if request.param == "redis" else {}

    def start(**config: object) -> tuple[Chat, Api, str]:
        app = Flask("host")
        app.config.update({"CHAT_API_KEY": KEY, "CHAT_JWT_SECRET": SECRET, "CHAT_RATE_LIMIT": "off", **backend,
                           **config})
        chat = Chat(app, url_prefix="/chat")
        base = served.serve(app)
        return chat, Api(base), base.replace("http:", "ws:", 1) + "/chat/ws"

    return start


def join(connect: Callable[..., Client], ws: str, user: str | None, query: str, version: int = 3) -> Client:
    """Connect user (a guest when None) with query and protocol version, and read up to the welcome."""
    token = f"&token={mint(user)}" if user else ""
    client = connect(f"{ws}?v={version}&{query}{token}")
    client.welcome_event = client.welcome()
    return client


def refused(connect: Callable[..., Client], url: str) -> tuple[int, str]:
    """Connect to url and return the close code and reason it is refused with."""
    client = connect(url)
    try:
        while True:
            client.next()
    except Closed as closed:
        return closed.code, closed.reason


def closed_within(client: Client, seconds: float) -> tuple[int, str]:
    """Read client until the server closes it, within seconds overall (or fail); return the code and reason."""
    deadline = time.monotonic() + seconds
    while True:
        client.ws.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            client.next()
        except Closed as closed:
            return closed.code, closed.reason


def send(client: Client, body: dict) -> None:
    client.send(json.dumps(body))


def test_client_frame_reads_each_version():
    """v1 takes every frame as typed, v2 reads {text, cid}, v3 reads typed objects and refuses a bad shape."""
    assert protocol.client_frame('{"type":"read","id":"5"}', 1).text == '{"type":"read","id":"5"}'
    assert protocol.client_frame('{"text":"hi","cid":"c1"}', 2) == protocol.Frame(text="hi", cid="c1")
    assert protocol.client_frame('{"type":"read","id":"5"}', 3) == protocol.Frame("read", id=5)
    assert protocol.client_frame("plain", 3) == protocol.Frame(text="plain")
    assert protocol.client_frame('{"text":"hi","reply_to":"7"}', 3).reply_to == 7
    assert protocol.client_frame('{"type":"react","id":"5","emoji":"👍","cid":"c"}', 3).emoji == "👍"
    for bad in ('{"type":"dance"}', '{"type":"read"}', '{"type":"read","id":"x"}', '{"type":"typing","id":"1"}',
                '{"type":"react","id":"1","emoji":""}', '{"text":5}', '{"type":"read","id":"1","cid":"a b"}'):
        with pytest.raises(protocol.Invalid):
            protocol.client_frame(bad, 3)
    with pytest.raises(protocol.Invalid) as caught:
        protocol.client_frame('{"type":"dance","cid":"c9"}', 3)
    assert caught.value.cid == "c9"


def test_a_private_room_takes_its_members_only(chat_server, connect):
    """PUT makes a private room; a member joins, a non-member gets 4403, a guest 4401; GET adds who is online."""
    _, api, ws = chat_server()
    status, body, _ = api("PUT", "/rooms/team", {"private": True, "members": ["ana", "bo"]})
    assert (status, body) == (200, {"room": "team", "private": True, "members": ["ana", "bo"]})
    ana = join(connect, ws, "ana", "room=team")
    assert ana.welcome_event["private"] is True and ana.welcome_event["dm"] is None
    assert refused(connect, f"{ws}?v=3&room=team&token={mint('cy')}") == (4403, "not a member")
    assert refused(connect, f"{ws}?room=team")[0] == 4401
    assert api("GET", "/rooms/team")[1] == {"room": "team", "private": True, "members": ["ana", "bo"], "online": 1}
    assert api("GET", "/rooms/team/messages", key=mint("cy"))[0] == 403


def test_a_removed_member_is_closed_and_refused(chat_server, connect):
    """DELETE of a member closes its sockets in the room with 4403 "removed"; PUT lets it back in."""
    _, api, ws = chat_server()
    api("PUT", "/rooms/team", {"private": True, "members": ["ana", "bo"]})
    bo = join(connect, ws, "bo", "room=team", version=1)
    assert api("DELETE", "/rooms/team/members/bo")[0] == 200
    assert closed_within(bo, 2) == (4403, "removed")
    assert refused(connect, f"{ws}?room=team&token={mint('bo')}")[0] == 4403
    assert api("PUT", "/rooms/team/members/bo")[0] == 200
    join(connect, ws, "bo", "room=team")


def test_a_ban_closes_and_refuses_even_in_an_open_room(chat_server, connect):
    """A ban closes the user's sockets with 4403 "banned", refuses its joins, and lifting it lets it in again."""
    chat, api, ws = chat_server()
    cy = join(connect, ws, "cy", "room=lobby", version=2)
    assert api("PUT", "/rooms/lobby/bans/cy")[0] == 200
    assert closed_within(cy, 2) == (4403, "banned")
    assert refused(connect, f"{ws}?room=lobby&token={mint('cy')}") == (4403, "banned")
    chat.unban("lobby", "cy")
    join(connect, ws, "cy", "room=lobby")


def test_a_muted_user_reads_but_its_messages_are_dropped(chat_server, connect):
    """A muted user still gets the room's messages; each of its own is answered {"state": 4, "code": "muted"}."""
    chat, api, ws = chat_server()
    ana, bo = join(connect, ws, "ana", "room=hall"), join(connect, ws, "bo", "room=hall")
    assert api("PUT", "/rooms/hall/mutes/bo")[0] == 200
    send(bo, {"text": "let me speak", "cid": "b1"})
    notice = bo.next_where(lambda e: e["state"] == 4)
    assert (notice["code"], notice["cid"]) == ("muted", "b1")
    send(ana, {"text": "hello", "cid": "a1"})
    assert bo.next_where(lambda e: e["state"] == 2)["message"] == "hello"
    assert ana.next_where(lambda e: e["state"] == 2)["message"] == "hello"
    chat.unmute("hall", "bo")
    send(bo, {"text": "thanks", "cid": "b2"})
    assert ana.next_where(lambda e: e["state"] == 2)["message"] == "thanks"


def test_a_dm_is_one_room_from_either_side_and_refused_to_a_third(chat_server, connect):
    """dm= gives both users the same derived room, POST /dms names it too, and a third user is refused."""
    chat, api, ws = chat_server()
    ana = join(connect, ws, "ana", "dm=bo")
    bo = join(connect, ws, "bo", "dm=ana")
    room = ana.welcome_event["room"]
    assert room == bo.welcome_event["room"] == dm_room("ana", "bo") == chat.dm("bo", "ana")
    assert (ana.welcome_event["dm"], bo.welcome_event["dm"], ana.welcome_event["private"]) == ("bo", "ana", True)
    assert api("POST", "/dms", {"users": ["bo", "ana"]})[1] == {"room": room}
    assert refused(connect, f"{ws}?v=3&room={room}&token={mint('cy')}") == (4403, "not a member")
    assert refused(connect, f"{ws}?v=3&dm=ana&token={mint('ana')}")[0] == 1008
    assert refused(connect, f"{ws}?v=3&dm=ana")[0] == 4401
    assert refused(connect, f"{ws}?v=2&dm=ana&token={mint('bo')}")[0] == 1008
    assert api("DELETE", f"/rooms/{room}/members/bo")[0] == 400


def test_unread_counts_before_and_after_a_read(chat_server, connect):
    """Others' messages count as unread in the welcome and in the user's rooms until a read moves past them."""
    _, api, ws = chat_server()
    api("PUT", "/rooms/team", {"private": True, "members": ["ana", "bo"]})
    ana = join(connect, ws, "ana", "room=team")
    for n in range(3):
        send(ana, {"text": f"m{n}", "cid": f"c{n}"})
    ids = [ana.next_where(lambda e: e["state"] == 5)["id"] for _ in range(3)]
    status, rooms, _ = api("GET", "/me/rooms", key=mint("bo"))
    assert status == 200 and [(r["room"], r["unread"], r["last"]["id"]) for r in rooms["rooms"]] == [
        ("team", 3, ids[-1])]
    bo = join(connect, ws, "bo", "room=team")
    assert (bo.welcome_event["read"], bo.welcome_event["unread"]) == (None, 3)
    send(bo, {"type": "read", "id": ids[1]})
    receipt = ana.next_where(lambda e: e.get("event") == "read")
    assert (receipt["user"], receipt["id"], receipt["message"]) == ("bo", ids[1], "")
    assert api("GET", "/users/bo/rooms")[1]["rooms"][0]["unread"] == 1
    assert api("GET", "/users/ana/rooms")[1]["rooms"][0]["unread"] == 0
    status, body, _ = api("PUT", "/rooms/team/read", {"id": ids[0]}, key=mint("bo"))
    assert (status, body["moved"]) == (200, False)
    again = join(connect, ws, "bo", "room=team")
    assert (again.welcome_event["read"], again.welcome_event["unread"]) == (ids[1], 1)
    send(ana, {"type": "delete", "id": ids[2], "cid": "d"})
    ana.next_where(lambda e: e["state"] == 5 and e["ack"] == "d")
    rooms = api("GET", "/users/bo/rooms")[1]["rooms"]
    assert (rooms[0]["unread"], rooms[0]["last"]["deleted"]) == (0, True)


def test_receipts_and_typing_reach_v3_clients_only(chat_server, connect):
    """Receipts and typing go to v3 clients (typing not to the sender's own tabs), once per 2 s; v1/v2 see none."""
    _, _, ws = chat_server()
    ana, ana_tab, bo = (join(connect, ws, user, "room=den") for user in ("ana", "ana", "bo"))
    old = [join(connect, ws, "cy", "room=den", version=version) for version in (1, 2)]
    send(ana, {"type": "typing"})
    send(ana, {"type": "typing"})
    typing = bo.next_where(lambda e: e.get("event") == "typing")
    assert (typing["user"], typing["name"], typing["message"], typing["room"]) == ("ana", "Ana", "", "den")
    send(bo, {"text": "marker", "cid": "m"})
    marker = bo.next_where(lambda e: e["state"] == 5)["id"]
    send(bo, {"type": "read", "id": marker})
    assert ana.next_where(lambda e: e.get("event") in ("typing", "read"))["event"] == "read"
    send(ana, {"text": "end", "cid": "e"})
    for client in (*old, bo, ana_tab):
        client.next_where(lambda e: e["state"] == 2 and e["message"] == "end")
    for client in old:
        assert not [e for e in client.events if e.get("event") in ("typing", "read")]
    assert [e for e in bo.events if e.get("event") == "typing"] == [typing]
    assert not [e for e in ana_tab.events if e.get("event") == "typing"]
    assert [e["user"] for e in ana_tab.events if e.get("event") == "read"] == ["bo"]


def test_every_bad_input_gets_a_clear_answer(chat_server, connect):
    """Bad rooms, users and ids answer 400; no key 401; a guest's read or typing is forbidden; a stray id not_found."""
    _, api, ws = chat_server()
    assert api("PUT", "/rooms/BAD!", {"private": True})[0] == 400
    assert api("PUT", "/rooms/ok/members/" + "x" * 65)[0] == 400
    assert api("PUT", "/rooms/ok/bans/a%01b")[0] == 400
    assert api("PUT", "/rooms/ok", {"private": "yes"})[0] == 400
    assert api("PUT", "/rooms/ok", {"members": "ana"})[0] == 400
    assert api("POST", "/dms", {"users": ["ana"]})[0] == 400
    assert api("POST", "/dms", {"users": ["ana", "ana"]})[0] == 400
    assert api("POST", "/dms", {"users": ["", "ana"]})[0] == 400
    assert api("PUT", "/rooms/ok/read", {"id": "x1"}, key=mint("ana"))[0] == 400
    assert api("PUT", "/rooms/ok/read", {"id": "12"}, key=mint("ana"))[0] == 404
    for method, path in (("PUT", "/rooms/ok"), ("GET", "/rooms/ok"), ("PUT", "/rooms/ok/members/a"),
                         ("DELETE", "/rooms/ok/mutes/a"), ("POST", "/dms"), ("GET", "/users/a/rooms")):
        assert api(method, path, {}, key=None)[0] == 401
    assert api("GET", "/me/rooms", key=None)[0] == 401
    guest = join(connect, ws, None, "room=ok")
    send(guest, {"type": "read", "id": "1", "cid": "g"})
    send(guest, {"type": "typing"})
    assert [guest.next_where(lambda e: e["state"] == 4)["code"] for _ in range(2)] == ["forbidden", "forbidden"]
    ana = join(connect, ws, "ana", "room=ok")
    send(ana, {"type": "read", "id": "12", "cid": "r"})
    send(ana, {"type": "dance", "cid": "d"})
    notices = [ana.next_where(lambda e: e["state"] == 4) for _ in range(2)]
    assert [(n["code"], n["cid"]) for n in notices] == [("not_found", "r"), ("invalid", "d")]


def test_the_python_calls_change_and_read_what_the_api_does(chat_server, connect):
    """create_room, add_member, remove_member, ban, mute, rooms_of and mark_read act as their HTTP twins."""
    chat, api, ws = chat_server()
    assert chat.create_room("team", members=["ana"]) == {"room": "team", "private": True, "members": ["ana"]}
    chat.add_member("team", "bo")
    bo = join(connect, ws, "bo", "room=team")
    posted = chat.publish("team", "standup at 10", name="bot")
    assert bo.next_where(lambda e: e["state"] == 2)["id"] == posted["id"]
    assert [(r["room"], r["unread"]) for r in chat.rooms_of("ana")] == [("team", 1)]
    assert chat.mark_read("team", "ana", posted["id"]) is True
    assert chat.mark_read("team", "ana", posted["id"]) is False
    assert bo.next_where(lambda e: e.get("event") == "read")["user"] == "ana"
    assert [(r["room"], r["unread"]) for r in chat.rooms_of("ana")] == [("team", 0)]
    chat.mute("team", "bo")
    send(bo, {"text": "hi", "cid": "h"})
    assert bo.next_where(lambda e: e["state"] == 4)["code"] == "muted"
    chat.remove_member("team", "bo")
    assert closed_within(bo, 2) == (4403, "removed")
    chat.ban("lobby", "ana")
    assert refused(connect, f"{ws}?token={mint('ana')}") == (4403, "banned")
    with pytest.raises(protocol.ProtocolError):
        chat.dm("ana", "ana")
    with pytest.raises(protocol.ProtocolError):
        chat.add_member("team", "")


def test_the_offline_hook_waits_out_a_reload(chat_server, connect):
    """On one process: a reload within CHAT_OFFLINE_GRACE calls nothing; the last close calls the hook once."""
    chat, api, ws = chat_server(CHAT_OFFLINE_GRACE=0.5)
    calls: list[tuple[str, dict]] = []
    chat.on_offline(lambda user, unread: calls.append((user, unread)))
    chat.create_room("team", members=["ana", "bo"])
    chat.publish("team", "for ana", user="bo", name="Bo")
    first = join(connect, ws, "ana", "room=team")
    first.close()
    again = join(connect, ws, "ana", "room=team")
    # An absence that should not be reported can only be seen not to be by waiting: three graces.
    time.sleep(1.5)
    assert calls == []
    again.close()
    wait_for(lambda: calls, 5, "the offline hook")
    assert calls == [("ana", {"team": 1})]


def test_no_receipt_in_a_room_past_the_presence_list_limit(chat_server, connect):
    """With more users online than CHAT_PRESENCE_LIST_LIMIT, a read moves the position but sends no receipt."""
    chat, _, ws = chat_server(CHAT_PRESENCE_LIST_LIMIT=1)
    ana, bo = join(connect, ws, "ana", "room=big"), join(connect, ws, "bo", "room=big")
    posted = chat.publish("big", "news", name="bot")
    send(bo, {"type": "read", "id": posted["id"]})
    wait_for(lambda: chat.rooms_of("bo")[0]["unread"] == 0, 5, "bo's read to be stored")
    send(bo, {"type": "typing"})
    assert ana.next_where(lambda e: e.get("event") in ("read", "typing"))["event"] == "typing"


def test_a_process_started_later_learns_who_is_online_elsewhere(served, connect, clean_redis_url):
    """Two apps on one Redis: a user on the first leaves the second (started after) with no call; leaving the first
    calls the hook once."""
    calls: list[tuple[str, dict]] = []
    urls = []
    for _ in range(2):
        app = Flask("host")
        app.config.update({"CHAT_JWT_SECRET": SECRET, "CHAT_BACKEND_URL": clean_redis_url, "CHAT_OFFLINE_GRACE": 0.5})
        Chat(app).on_offline(lambda user, unread: calls.append((user, unread)))
        urls.append(served.serve(app).replace("http:", "ws:", 1) + "/ws")
    first = join(connect, urls[0], "ana", "room=hall")
    later = join(connect, urls[1], "ana", "room=hall")
    later.close()
    # An absence that should not be reported can only be seen not to be by waiting: three graces.
    time.sleep(1.5)
    assert calls == []
    first.close()
    wait_for(lambda: calls, 5, "the offline hook")
    time.sleep(1)
    assert [user for user, _ in calls] == ["ana"]
