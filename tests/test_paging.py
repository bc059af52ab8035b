"""Paging back through a room's history over the HTTP API: before=, since=, the limit, and who may read."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tokens import SECRET, mint


def get(server, path: str, token: str | None = None) -> tuple[int, dict]:
    """GET path under /api and return (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{server.url}/api{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def fill(server, connect, room: str, count: int) -> None:
    """Send count messages m0, m1, ... into room and wait until they are echoed."""
    client = connect(f"{server.ws_url}?room={room}")
    client.welcome()
    for number in range(count):
        client.send(f"m{number}")
    client.chats(count)
    client.close()


def test_paging_back_through_10000_messages_sees_each_once_in_order(make_server, connect):
    """Pages of 100 with before= walk from the newest to the first of 10,000 messages, then say there is no more."""
    server = make_server(CHAT_RATE_LIMIT="off")
    fill(server, connect, "long", 10_000)
    status, page = get(server, "/rooms/long/messages?limit=100")
    seen: list[dict] = []
    while True:
        ids = [int(m["id"]) for m in page["messages"]]
        assert status == 200 and ids == sorted(ids)
        seen[:0] = page["messages"]
        if not page["more"]:
            break
        status, page = get(server, f"/rooms/long/messages?before={page['messages'][0]['id']}&limit=100")
    assert [m["message"] for m in seen] == [f"m{n}" for n in range(10_000)]
    assert len({m["id"] for m in seen}) == 10_000


def test_since_pages_forward_and_limit_stops_at_200(make_server, connect):
    """since= returns the first messages after an id; a limit over 200 gives 200; since with before is 400."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_HISTORY_SIZE="10")
    fill(server, connect, "forward", 300)
    _, everything = get(server, "/rooms/forward/messages?limit=1000")
    assert len(everything["messages"]) == 200 and everything["more"]
    first = everything["messages"][0]
    _, after = get(server, f"/rooms/forward/messages?since={first['id']}&limit=3")
    assert [m["message"] for m in after["messages"]] == ["m101", "m102", "m103"] and after["more"]
    assert get(server, f"/rooms/forward/messages?since=1&before={first['id']}")[0] == 400
    assert get(server, "/rooms/forward/messages?before=soon")[0] == 400


def test_without_a_store_pages_reach_back_through_the_backend_window(make_server, connect):
    """With CHAT_STORE_URL=none before= pages through what the backend keeps, and no further."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_STORE_URL="none", CHAT_HISTORY_SIZE="30")
    fill(server, connect, "window", 50)
    _, newest = get(server, "/rooms/window/messages?limit=20")
    _, older = get(server, f"/rooms/window/messages?before={newest['messages'][0]['id']}&limit=20")
    assert [m["message"] for m in older["messages"]] == [f"m{n}" for n in range(20, 30)] and not older["more"]


def test_pages_are_for_whoever_may_join_the_room(make_server, connect):
    """With anonymous access off a page needs an identity (401), and a token for other rooms is refused (403)."""
    server = make_server(CHAT_ANONYMOUS="off", CHAT_JWT_SECRET=SECRET)
    member, outsider = mint("u1", "Ann", ["club"]), mint("u1", "Ann", ["other"])
    client = connect(f"{server.ws_url}?room=club&token={member}")
    client.welcome()
    client.send("members only")
    client.chats(1)
    assert get(server, "/rooms/club/messages?before=99999999999999999")[0] == 401
    assert get(server, "/rooms/club/messages?before=99999999999999999", outsider)[0] == 403
    status, page = get(server, "/rooms/club/messages?before=99999999999999999", member)
    assert status == 200 and [m["message"] for m in page["messages"]] == ["members only"]


def test_paging_forward_through_more_changes_than_a_page_holds_skips_none(make_server):
    """since= pages hand out every change after since, in id order, even when there are more of them than the
    history size between two messages: a page ends before the changes it could not hold, and says there is more."""
    key = "paging-test-key-0123456789"
    server = make_server(CHAT_API_KEY=key, CHAT_HISTORY_SIZE="10")

    def api(method: str, path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{server.url}/api{path}", data=json.dumps(body).encode(), method=method,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    first = api("POST", "/rooms/edited/messages", {"message": "first"})["id"]
    second = api("POST", "/rooms/edited/messages", {"message": "second"})["id"]
    edits = [api("PATCH", f"/rooms/edited/messages/{second}", {"message": f"second, take {n}"})["id"]
             for n in range(15)]
    last = api("POST", "/rooms/edited/messages", {"message": "last"})["id"]
    seen: list[str] = []
    since = first
    for _ in range(10):
        status, page = get(server, f"/rooms/edited/messages?since={since}&limit=50")
        assert status == 200
        seen += [item["id"] for item in page["messages"]]
        if not page["more"]:
            break
        since = page["messages"][-1]["id"]
    assert seen == [second, *edits, last]
