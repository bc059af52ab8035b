"""History that outlives the process on the default set-up: restarts, a worker killed mid-traffic, retention."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request

from conftest import Client, Server, wait_for
from redis_server import flushall


def history(server: Server, room: str, **query: str) -> dict:
    """Return GET /api/rooms/<room>/messages with the given query."""
    params = "&".join(f"{key}={value}" for key, value in query.items())
    with urllib.request.urlopen(f"{server.url}/api/rooms/{room}/messages?{params}", timeout=5) as response:
        return json.load(response)


def shown(events: list[dict]) -> list[tuple[str, str, str]]:
    """Return (id, name, message) of each chat frame."""
    return [(e["id"], e["name"], e["message"]) for e in events if e.get("state") == 2]


def test_a_restart_keeps_the_conversation_and_since_resumes_exactly(make_server, connect):
    """After SIGTERM and a new start, a new client replays the same messages and since resumes with no gap."""
    server = make_server(CHAT_RATE_LIMIT="off")
    talker = connect(server.ws_url + "?room=kept&name=ann")
    talker.welcome()
    for number in range(30):
        talker.send(f"before {number}")
    before = talker.chats(30)
    talker.close()
    assert server.restart() is server

    fresh = connect(server.ws_url + "?room=kept")
    fresh.welcome()
    assert shown(fresh.chats(30)) == shown(before)
    resumed = connect(f"{server.ws_url}?room=kept&since={before[9]['id']}")
    resumed.welcome()
    resumed.send("after")
    events = [resumed.next_where(lambda e: e.get("state") in (2, 3) and e.get("event") != "join") for _ in range(21)]
    assert [e.get("event") for e in events if e["state"] == 3] == []
    assert shown(events[:20]) == shown(before[10:])
    assert events[20]["message"] == "after" and int(events[20]["id"]) > int(before[-1]["id"])


def test_a_worker_killed_mid_traffic_loses_no_acknowledged_message(make_server, connect):
    """SIGKILL of the worker while clients send flat out: every acked message is in the room after the respawn."""
    server = make_server(CHAT_RATE_LIMIT="off")
    room = "crash"
    listener = connect(f"{server.ws_url}?room={room}")
    listener.welcome()
    sender, plain = connect(f"{server.ws_url}?room={room}&v=2"), connect(f"{server.ws_url}?room={room}")
    sender.welcome()
    plain.welcome()
    acks: dict[str, str] = {}
    broadcast: list[dict] = []
    stop = threading.Event()

    def send(client: Client, frame, burst: int) -> None:
        number = 0
        while not stop.is_set():
            try:
                for _ in range(burst):
                    client.send(frame(number))
                    number += 1
            except OSError:
                return
            # About 5,000 messages a second in all: a steady stream for the kill to cut into.
            stop.wait(0.01)

    def read(client: Client, keep) -> None:
        try:
            while True:
                keep(client.next())
        except Exception:
            return

    jobs = [
        (send, sender, lambda n: json.dumps({"text": f"t{n}", "cid": f"c{n}"}), 10),
        (send, plain, lambda n: f"v1 {n}", 40),
        (read, sender, lambda e: e["state"] == 5 and acks.__setitem__(e["ack"], e["id"])),
        (read, listener, broadcast.append),
    ]
    threads = [threading.Thread(target=job, args=rest, name=f"job-{n}") for n, (job, *rest) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(acks) >= 500, 20, "500 acks")
    (worker,) = server.worker_pids()
    os.kill(worker, signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join(15)
    wait_for(lambda: server.worker_pids() not in ([], [worker]), 20, "a new worker")
    wait_for(server._ready, 20, "the new worker to answer")

    kept: dict[str, str] = {}
    since = "0"
    while page := history(server, room, since=since, limit="200")["messages"]:
        kept.update((m["id"], m["message"]) for m in page)
        since = page[-1]["id"]
    acked = {message_id: f"t{cid[1:]}" for cid, message_id in acks.items()}
    lost = sorted(set(acked.items()) - set(kept.items()))
    assert not lost, (len(lost), lost[:5], [(i, kept.get(i)) for i, _ in lost[:5]], len(acked), len(kept))
    seen = {e["id"] for e in broadcast if e.get("state") == 2}
    unstored = seen - set(kept)
    # What was broadcast but not yet committed when the worker died: the last few milliseconds' worth.
    assert len(unstored) <= 200, len(unstored)
    print(f"acked {len(acked)}, broadcast {len(seen)}, broadcast but not stored {len(unstored)}")


def test_retention_keeps_the_newest_messages_of_a_room(make_server, connect):
    """CHAT_RETENTION=5 leaves a room's 5 newest messages, in the store and after a restart."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_RETENTION="5", CHAT_RETENTION_INTERVAL="0.1",
                         CHAT_HISTORY_SIZE="3")
    client = connect(server.ws_url + "?room=short")
    client.welcome()
    for number in range(20):
        client.send(f"r{number}")
    client.chats(20)
    wait_for(lambda: len(history(server, "short", limit="200")["messages"]) == 5, 10, "retention to run")
    server.restart()
    assert [m["message"] for m in history(server, "short", limit="200")["messages"]] == [f"r{n}" for n in range(15, 20)]
    fresh = Client(server.ws_url + "?room=short")
    try:
        fresh.welcome()
        assert [e["message"] for e in fresh.chats(5)] == [f"r{n}" for n in range(15, 20)]
    finally:
        fresh.close()


def test_a_room_redis_forgot_still_replays_and_resumes_from_the_store(make_server, connect, clean_redis_url):
    """After Redis loses a room's keys (expired, or a restart without persistence) joins replay it from the store."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_BACKEND_URL=clean_redis_url)
    talker = connect(server.ws_url + "?room=revived")
    talker.welcome()
    for number in range(10):
        talker.send(f"kept {number}")
    before = talker.chats(10)
    talker.close()
    flushall(clean_redis_url)
    fresh = connect(server.ws_url + "?room=revived")
    fresh.welcome()
    assert shown(fresh.chats(10)) == shown(before)
    resumed = connect(f"{server.ws_url}?room=revived&since={before[0]['id']}")
    resumed.welcome()
    resumed.send("later")
    events = [resumed.next_where(lambda e: e.get("state") in (2, 3) and e.get("event") != "join") for _ in range(10)]
    assert shown(events[:9]) == shown(before[1:]) and events[9]["message"] == "later"
