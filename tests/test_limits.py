"""Limits and rules the docs promise, each at server level: per-address limits behind a proxy, the default
connection limit, the rate-limit notice once per burst, the client id's format, the welcome's name list limit,
and how long a stopping worker waits for its clients (CHAT_SHUTDOWN_TIMEOUT)."""

from __future__ import annotations

import pytest
from conftest import Client, wait_for
from wsclient import cid_frame

FORWARDED = "X-Forwarded-For: {}"


@pytest.mark.parametrize("trusted", [True, False])
def test_the_per_address_limit_counts_the_forwarded_address_only_behind_a_trusted_proxy(make_server, connect,
                                                                                       trusted):
    """With CHAT_TRUST_PROXY on, CHAT_MAX_CONNECTIONS_PER_IP counts X-Forwarded-For's last address (the one the
    proxy added); off, the header is ignored and every client counts as the peer's address."""
    server = make_server(CHAT_MAX_CONNECTIONS_PER_IP="2", CHAT_TRUST_PROXY="on" if trusted else "off")

    def from_(address: str) -> Client:
        return connect(server.ws_url, header=[FORWARDED.format(f"10.9.9.9, {address}")])

    first, second = from_("203.0.113.9"), from_("203.0.113.9")
    assert first.welcome() and second.welcome()
    third = from_("203.0.113.9")
    assert third.close_code() == 1008
    other = from_("198.51.100.7")
    if trusted:
        assert other.welcome()["event"] == "welcome"
    else:
        assert other.close_code() == 1008


@pytest.mark.parametrize(("kind", "sizing"), [("gthread", {"threads": 10}),
                                              ("gevent", {"GUNICORN_CMD_ARGS": "--worker-connections 10"})])
def test_the_default_connection_limit_is_the_workers_capacity_less_four(make_server, connect, kind, sizing):
    """Without CHAT_MAX_CONNECTIONS a worker admits --threads (gthread) or --worker-connections (gevent) less 4
    WebSockets; the next is closed with 1013, and a place that frees up is given again."""
    server = make_server(kind, **sizing)
    admitted = [connect(server.ws_url) for _ in range(6)]
    for client in admitted:
        client.welcome()
    assert connect(server.ws_url).close_code() == 1013
    admitted[0].close()
    wait_for(lambda: server.health()["connections"] == 5, 10, "a place to free up")
    assert connect(server.ws_url).welcome()["event"] == "welcome"


def burst(client: Client, count: int, prefix: str) -> None:
    """Send count messages at once."""
    for number in range(count):
        client.send(f"{prefix} {number}")


def read_through_heartbeats(client: Client, into: list[dict], beats: int = 2) -> None:
    """Read events into `into` until beats heartbeats came: what the reader sent before them has arrived."""
    seen = 0
    while seen < beats:
        event = client.next(skip_heartbeats=False)
        into.append(event)
        seen += event["state"] == 1


def test_a_v1_sender_over_the_rate_hears_of_it_once_per_burst(make_server):
    """Over CHAT_RATE_LIMIT a v1 client gets one rate_limited notice for a burst, however many it loses; a
    message let through ends the burst, so the next burst gets one notice again."""
    server = make_server(CHAT_RATE_LIMIT="20,5", CHAT_HEARTBEAT_INTERVAL="0.5", CHAT_METRICS_TOKEN="t" * 16)
    client = Client(server.ws_url + "?room=bursty")
    try:
        client.welcome()
        events: list[dict] = []
        burst(client, 15, "first")
        read_through_heartbeats(client, events)
        # Two heartbeats later (0.5 s at 20 a second) the bucket is full again: "calm" goes through.
        client.send("calm")
        events.append(client.next_where(lambda e: e["state"] == 4 or e.get("message") == "calm"))
        burst(client, 15, "second")
        read_through_heartbeats(client, events)
    finally:
        client.close()
    notices = [e for e in events if e["state"] == 4]
    chats = [e["message"] for e in events if e["state"] == 2]
    assert [n["code"] for n in notices] == ["rate_limited", "rate_limited"], notices
    assert chats[:6] == [f"first {n}" for n in range(5)] + ["calm"]
    # "calm" took one of the five tokens, and the second burst came at once: four or five go through.
    assert chats[6:] in ([f"second {n}" for n in range(4)], [f"second {n}" for n in range(5)]), chats[6:]
    assert events.index(notices[0]) < events.index(next(e for e in events if e.get("message") == "calm"))


VALID = ["~", "!" * 64, "deploy-1:x/y"]
INVALID = ["", "x" * 65, "with space", "é", "tab\there"]


def test_a_cid_is_1_to_64_printable_ascii_characters_without_a_space(make_server):
    """A v2 frame whose cid is 1-64 printable ASCII characters with no space is acked; any other cid makes the
    frame text as typed, broadcast as it is, with no ack."""
    server = make_server(CHAT_RATE_LIMIT="off")
    client = Client(server.ws_url + "?room=cids&v=2")
    try:
        client.welcome()
        frames = [cid_frame(f"text {n}", cid) for n, cid in enumerate(VALID + INVALID)]
        for frame in frames:
            client.send(frame)
        client.send(cid_frame("end", "end"))
        events: list[dict] = []
        while not (events and events[-1].get("ack") == "end"):
            events.append(client.next_where(lambda e: e["state"] in (2, 4, 5)))
    finally:
        client.close()
    assert [e["ack"] for e in events if e["state"] == 5] == [*VALID, "end"]
    chats = [e["message"] for e in events if e["state"] == 2]
    assert chats == [f"text {n}" for n in range(len(VALID))] + frames[len(VALID):] + ["end"]
    assert not [e for e in events if e["state"] == 4]


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_above_the_list_limit_a_welcome_lists_no_more_names_and_v1_hears_no_joins(make_server, connect, request,
                                                                                  backend):
    """With CHAT_PRESENCE_LIST_LIMIT=3 the welcome of a room of 5 lists 3 names and the exact count, and a v1
    member hears of joins only while the room has at most 3 members."""
    settings = {"CHAT_PRESENCE_LIST_LIMIT": "3", "CHAT_RATE_LIMIT": "off"}
    if backend == "redis":
        settings["CHAT_BACKEND_URL"] = request.getfixturevalue("clean_redis_url")
    server = make_server(**settings)
    names = ["ann", "bob", "cy", "dee", "eve"]
    clients, welcomes = [], []
    for name in names:
        clients.append(connect(f"{server.ws_url}?room=listed&name={name}"))
        welcomes.append(clients[-1].welcome())
    assert welcomes[-1]["online"] == 5
    assert len(welcomes[-1]["users"]) == 3 and set(welcomes[-1]["users"]) <= set(names)
    assert welcomes[2]["users"] == sorted(names[:3])
    clients[-1].send("marker")
    clients[0].next_where(lambda e: e.get("message") == "marker")
    joins = [e["online"] for e in clients[0].events if e.get("event") == "join"]
    assert joins and max(joins) <= 3, joins


@pytest.mark.parametrize(("shutdown_timeout", "waited_out"), [("30", True), ("0.1", False)])
def test_a_stopping_worker_waits_shutdown_timeout_for_its_clients(make_server, connect, shutdown_timeout,
                                                                  waited_out):
    """On SIGTERM a worker waits up to CHAT_SHUTDOWN_TIMEOUT for its clients to close: clients that do not answer
    their 1001 are ended at their close deadline (2 s) and logged, when the worker waits that long; a worker
    told to wait 0.1 s exits before that, and logs no such end."""
    server = make_server(CHAT_SHUTDOWN_TIMEOUT=shutdown_timeout, CHAT_RATE_LIMIT="off")
    # Neither client reads while the server stops, so neither answers its close frame.
    for name in ("quiet", "still"):
        connect(f"{server.ws_url}?room=stuck&name={name}").welcome()
    assert server.stop() == 0
    ended = server.log().count("room=stuck code=1001")
    assert ended == 2 if waited_out else ended < 2, server.log()[-2000:]
