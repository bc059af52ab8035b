"""Protocol v2 sends: each message with a client id is stored and delivered once, across cuts, workers and restarts."""

from __future__ import annotations

from conftest import Client
from wsclient import cid_frame as frame

MARK = "end of test"


#: The sender key a guest keeps across reconnects, so that its resent client ids are its own.
KEY = "guest-key-0123456789abcdef"


def room_sees(listener: Client, marker_from: Client) -> list[dict]:
    """Send a marker from marker_from and return every chat message listener got before it."""
    marker_from.send(MARK)
    seen = []
    while (event := listener.next_where(lambda e: e["state"] == 2))["message"] != MARK:
        seen.append(event)
    return seen


def collect_acks(client: Client, cids: set[str], acks: dict[str, list[str]]) -> None:
    """Read client's frames until every cid in cids has an ack, recording each ack's id."""
    while not cids <= acks.keys():
        event = client.next()
        if event["state"] == 5:
            acks.setdefault(event["ack"], []).append(event["id"])


def cut_and_resend(first_url: str, second_url: str, connect) -> None:
    """Send 20 of 40 with cids on first_url, cut TCP, resend the unacked ones and the rest on second_url: once each."""
    listener = connect(first_url + "?room=once")
    listener.welcome()
    sender = connect(first_url + f"?room=once&v=2&key={KEY}")
    sender.welcome()
    cids = [f"cid-{n}" for n in range(40)]
    acks: dict[str, list[str]] = {}
    for n, cid in enumerate(cids[:5]):
        sender.send(frame(f"message {n}", cid))
    collect_acks(sender, set(cids[:5]), acks)
    # The next 15 reach the server, but the connection is gone before their acks come back.
    for n, cid in enumerate(cids[5:20], start=5):
        sender.send(frame(f"message {n}", cid))
    sender.drop()
    since = max(int(ids[0]) for ids in acks.values())
    resumed = connect(f"{second_url}?room=once&v=2&key={KEY}&since={since}")
    resumed.welcome()
    unacked = [n for n, cid in enumerate(cids[:20]) if cid not in acks]
    assert len(unacked) == 15
    for n in [*unacked, *range(20, 40)]:
        resumed.send(frame(f"message {n}", cids[n]))
    collect_acks(resumed, set(cids), acks)
    seen = room_sees(listener, resumed)
    assert sorted(e["message"] for e in seen) == sorted(f"message {n}" for n in range(40))
    got = {e["message"]: e["id"] for e in seen}
    assert acks == {cid: [got[f"message {n}"]] for n, cid in enumerate(cids)}


def test_a_cut_connection_resends_and_the_room_sees_each_message_once(make_server, connect):
    """40 sends with cids, TCP cut after 20, resent on a new connection: the room gets 40, one ack per cid."""
    server = make_server(CHAT_RATE_LIMIT="off")
    cut_and_resend(server.ws_url, server.ws_url, connect)


def test_the_resend_on_another_worker_is_delivered_once(make_server, connect, clean_redis_url):
    """The same over two workers sharing Redis and the store, the resend landing on the other one."""
    settings = {"CHAT_RATE_LIMIT": "off", "CHAT_BACKEND_URL": clean_redis_url}
    first, second = make_server(**settings), make_server(**settings)
    cut_and_resend(first.ws_url, second.ws_url, connect)


def test_a_cid_sent_before_a_restart_is_acked_with_its_first_id(make_server, connect):
    """A resend after the server restarted is not delivered again: the ack names the id it was first stored under."""
    server = make_server(CHAT_RATE_LIMIT="off")
    sender = connect(server.ws_url + f"?room=again&v=2&key={KEY}")
    sender.welcome()
    sender.send(frame("only once", "restart-1"))
    first = sender.next_where(lambda e: e["state"] == 5)
    sender.close()
    server.restart()
    listener = connect(server.ws_url + "?room=again")
    listener.welcome()
    assert [e["message"] for e in listener.chats(1)] == ["only once"]
    again = connect(server.ws_url + f"?room=again&v=2&key={KEY}&since={first['id']}")
    again.welcome()
    again.send(frame("only once", "restart-1"))
    assert again.next_where(lambda e: e["state"] == 5) == first
    assert room_sees(listener, again) == []


def test_v2_frames_that_are_not_such_an_object_are_text_and_v1_is_untouched(server, connect):
    """In v1 a v2-shaped frame is text as typed; in v2 anything but {"text", "cid"} is text, sent without an ack."""
    listener = connect(server.ws_url + "?room=shape")
    listener.welcome()
    plain, modern = connect(server.ws_url + "?room=shape"), connect(server.ws_url + "?room=shape&v=2")
    plain.welcome()
    modern.welcome()
    shaped = frame("hi", "c1")
    plain.send(shaped)
    assert [e["message"] for e in listener.chats(1)] == [shaped]
    texts = ['{"text": "hi", "cid": "c1", "extra": 1}', '{"text": 5, "cid": "c2"}', "just text"]
    for text in texts:
        modern.send(text)
    modern.send(frame("real", "c3"))
    assert [e["message"] for e in listener.chats(4)] == [*texts, "real"]
    answer = modern.next_where(lambda e: e["state"] in (4, 5))
    assert (answer["state"], answer["ack"]) == (5, "c3")


def test_refused_v2_messages_say_which_and_why(make_server, connect):
    """An empty message and one over the rate limit each get a state-4 notice naming its cid; none is sent."""
    server = make_server(CHAT_RATE_LIMIT="1,1")
    sender = connect(server.ws_url + "?room=refused&v=2")
    sender.welcome()
    sender.send(frame("   ", "blank"))
    sender.send(frame("first", "ok"))
    sender.send(frame("second", "fast"))
    events = [sender.next_where(lambda e: e["state"] in (4, 5)) for _ in range(3)]
    assert sorted((e["state"], e.get("code"), e.get("cid") or e.get("ack")) for e in events) == [
        (4, "empty", "blank"), (4, "rate_limited", "fast"), (5, None, "ok"),
    ]


def test_the_same_cid_twice_on_one_connection_is_one_message_two_acks(make_server, connect):
    """A client that sends a cid again before its ack gets two acks with one id, and the room one message."""
    server = make_server(CHAT_RATE_LIMIT="off")
    listener = connect(server.ws_url + "?room=twice")
    listener.welcome()
    sender = connect(server.ws_url + "?room=twice&v=2")
    sender.welcome()
    sender.send(frame("twice", "dup"))
    sender.send(frame("twice", "dup"))
    acks = [sender.next_where(lambda e: e["state"] == 5) for _ in range(2)]
    assert acks[0] == acks[1]
    assert [e["id"] for e in room_sees(listener, sender)] == [acks[0]["id"]]
