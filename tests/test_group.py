"""Redis group commit: a room keeps publishing whatever happens to its waiting publishers, and groups count bytes."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from conftest import ROOT, wait_for

from chat import backends, config
from chat.backends.redis import group
from chat.backends.redis import keys as redis_keys

SETTINGS = {**config.DEFAULTS, "HISTORY_SIZE": 50, "HISTORY_REPLAY": 3, "PRESENCE_TTL": 30}

#: Runs in a fresh interpreter that gevent patched: greenlets publishing to one room are killed, or time out,
#: while queued, while leading, and just after being handed the lead; prints what the room stored.
GREEN = r"""
from gevent import monkey

monkey.patch_all()

import json
import sys
import time

import gevent
import redis

from chat import backends
from chat.backends import redis as redis_backend
from chat.backends.redis.group import Groups

# A group held by the pause waits for the test, not for the socket timeout.
redis_backend.TIMEOUT = 30
url = sys.argv[1]
backend = backends.create(url, {"HISTORY_SIZE": 50, "HISTORY_REPLAY": 3, "PRESENCE_TTL": 30, "ROOM_EXPIRY": 600})
admin = redis.Redis.from_url(url)


def until(condition, what):
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        gevent.sleep(0.005)


def queued(groups, room, count):
    until(lambda: len(groups._queues.get(room, ())) == count, f"{count} queued in {room}")


def held():
    until(lambda: admin.info("clients")["blocked_clients"] == 1, "a group held by the pause")


def bounded(text):
    try:
        with gevent.Timeout(0.01):
            backend.publish("busy", "ann", text)
    except gevent.Timeout:
        return "timed out"
    return "sent"


groups = backend._groups
first = backend.publish("busy", "ann", "before")
admin.client_pause(30_000, all=False)
try:
    leader = gevent.spawn(backend.publish, "busy", "ann", "held")
    held()
    killed = gevent.spawn(backend.publish, "busy", "ann", "killed while queued")
    queued(groups, "busy", 1)
    killed.kill()
    timed = gevent.spawn(bounded, "timed out while queued")
    timed.join()
    queued(groups, "busy", 0)
    follower = gevent.spawn(backend.publish, "busy", "ann", "after the leader")
    queued(groups, "busy", 1)
    leader.kill()
finally:
    admin.client_unpause()
follower_id = follower.get(timeout=10).id

victims = []


def send(room, messages):
    ids = backend._send(room, messages)
    for victim in victims:
        victim.kill(block=False)
    return ids


handing = Groups(send, 30)
admin.client_pause(30_000, all=False)
try:
    holder = gevent.spawn(handing.publish, "handed", ("ann", "held", int(time.time() * 1000), "", ""))
    held()
    victim = gevent.spawn(handing.publish, "handed", ("ann", "handed the lead", int(time.time() * 1000), "", ""))
    queued(handing, "handed", 1)
    behind = gevent.spawn(handing.publish, "handed", ("ann", "behind the victim", int(time.time() * 1000), "", ""))
    queued(handing, "handed", 2)
    victims.append(victim)
finally:
    admin.client_unpause()
holder.get(timeout=10)
behind_id = behind.get(timeout=10).id
victim.join(timeout=10)
victims.clear()

later = [backend.publish("busy", "ann", f"later {n}").id for n in range(3)]
together = [gevent.spawn(backend.publish, "busy", "ann", f"together {n}") for n in range(5)]
gevent.joinall(together, timeout=10, raise_error=True)
last = backend.publish("handed", "ann", "last").id
print(json.dumps({
    "first": first.id,
    "follower": follower_id,
    "later": later,
    "together": [greenlet.value.id for greenlet in together],
    "timed": timed.value,
    "victim": type(victim.value).__name__,
    "behind": behind_id,
    "last": last,
    "busy": [json.loads(item.payload)["message"] for item in backend.replay("busy", None, 50).messages],
    "handed": [json.loads(item.payload)["message"] for item in backend.replay("handed", None, 50).messages],
}))
backend.close()
"""


def test_a_room_keeps_publishing_after_its_greenlets_are_killed_or_time_out(clean_redis_url):
    """Under gevent, a publisher killed while queued, one that timed out, a killed leader and one killed just
    after it was handed the lead leave the room publishing, in order."""
    finished = subprocess.run(
        [sys.executable, "-c", GREEN, clean_redis_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    seen = json.loads(finished.stdout)
    assert seen["timed"] == "timed out"
    assert seen["victim"] == "GreenletExit"
    ids = [seen["first"], seen["follower"], *seen["later"], *sorted(seen["together"])]
    assert ids == sorted(set(ids))
    busy = [text for text in seen["busy"] if text != "held"]
    assert busy[:2] == ["before", "after the leader"]
    assert busy[2:5] == [f"later {n}" for n in range(3)]
    assert sorted(busy[5:]) == [f"together {n}" for n in range(5)]
    assert seen["handed"][0] == "held" and seen["handed"][-2:] == ["behind the victim", "last"]
    assert "killed while queued" not in seen["busy"] and "timed out while queued" not in seen["busy"]
    assert seen["behind"] < seen["last"]


def queued(backend, room: str) -> int:
    """Return how many of room's messages wait behind its group on the way."""
    groups = backend._groups
    with groups._lock:
        return len(groups._queues.get(room, ()))


@pytest.mark.parametrize(("letter", "groups"), [("x", [4]), ("\u00e9", [2, 2])], ids=["ascii", "two-byte"])
def test_a_group_carries_at_most_its_bytes_of_text_in_utf_8(clean_redis_url, letter, groups):
    """Messages that wait together go in groups of at most MOST_BYTES of UTF-8 text, whatever their length in
    characters: four quarters of it in ASCII go as one group, the same in a two-byte letter as two."""
    backend = backends.create(clean_redis_url, SETTINGS)
    admin = redis.Redis.from_url(clean_redis_url)
    channel = admin.pubsub()
    text = letter * (group.MOST_BYTES // 4)
    try:
        channel.ssubscribe(redis_keys.channel("big"))
        wait_for(lambda: channel.get_message(timeout=0.1), message="the subscription")
        admin.client_pause(30_000, all=False)
        try:
            with ThreadPoolExecutor(5, thread_name_prefix="test-sender") as pool:
                held = pool.submit(backend.publish, "big", "ann", "held")
                wait_for(lambda: admin.info("clients")["blocked_clients"] == 1, message="the first group to be held")
                waiting = [pool.submit(backend.publish, "big", "ann", text) for _ in range(4)]
                wait_for(lambda: queued(backend, "big") == 4, message="four messages to wait")
                admin.client_unpause()
                ids = [held.result(10).id] + [future.result(10).id for future in waiting]
        finally:
            admin.client_unpause()
        sizes: list[int] = []
        while sum(sizes) < 5:
            message = wait_for(lambda: channel.get_message(timeout=0.1), message="the groups on the channel")
            body = json.loads(message["data"])
            sizes.append(len(body) if isinstance(body, list) else 1)
    finally:
        channel.close()
        admin.close()
        backend.close()
    assert sizes == [1, *groups]
    assert sorted(ids) == list(range(ids[0], ids[0] + 5))
