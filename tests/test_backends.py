"""Backends: one test body against memory and a real redis-server, plus what only Redis can do."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from conftest import wait_for
from inbox import started
from redis_server import RedisServer, flushall

from chat import backends, config, protocol
from chat.backends import Backend, Change, Missing, Refused, Unavailable
from chat.backends import redis as redis_backend
from chat.backends.redis import keys as redis_keys
from chat.backends.redis import presence as redis_presence

ROOT = Path(__file__).resolve().parent.parent
SIZE, REPLAY = 5, 3
SETTINGS = {**config.DEFAULTS, "HISTORY_SIZE": SIZE, "HISTORY_REPLAY": REPLAY, "PRESENCE_TTL": 30}

Make = Callable[..., Backend]


def holds(condition: Callable[[], bool], seconds: float) -> bool:
    """Check that condition stays true for the given time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            return False
        time.sleep(0.05)
    return condition()


def join(backend: Backend, room: str, member: str, name: str, user: str | None = None) -> int:
    """Enter room as member and return the online count its welcome shows."""
    return backend.enter(room, member, name, None, 0, user).online


def leave(backend: Backend, room: str, member: str) -> int:
    """Exit room as member and return how many are online after."""
    return backend.exit(room, member)


def concurrently(count: int, work: Callable[[int], object]) -> list[object]:
    """Run work(0..count-1) in threads that start together, and return the results."""
    barrier = threading.Barrier(count)

    def run(index: int) -> object:
        barrier.wait()
        return work(index)

    with ThreadPoolExecutor(count, thread_name_prefix="test-worker") as pool:
        return list(pool.map(run, range(count), timeout=60))


@pytest.fixture
def factory() -> Iterator[Callable[..., Backend]]:
    """Build backends from a URL and settings, and close them after the test."""
    made: list[Backend] = []

    def build(url: str, **settings: object) -> Backend:
        backend = backends.create(url, {**SETTINGS, **settings})
        made.append(backend)
        return backend

    yield build
    for backend in made:
        backend.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def url(request) -> str:
    """Return the URL of each backend: memory, a flushed real redis-server, a flushed real 3-primary cluster."""
    if request.param == "memory":
        return "memory://"
    if request.param == "cluster":
        return request.getfixturevalue("clean_cluster_url")
    return request.getfixturevalue("clean_redis_url")


@pytest.fixture
def backend(url: str, factory: Callable[..., Backend]) -> Backend:
    """Return one backend of each kind."""
    return factory(url)


@pytest.fixture
def make_redis(clean_redis_url: str, factory: Callable[..., Backend]) -> Make:
    """Build Redis backends that share one flushed redis-server, as processes would."""
    return lambda **settings: factory(clean_redis_url, **settings)


@pytest.fixture
def persistent() -> Iterator[RedisServer]:
    """Start a redis-server of this test's own, with an fsync-always AOF."""
    with RedisServer(persistent=True) as server:
        yield server


def publish_many(backend: Backend, room: str, count: int, prefix: str = "m") -> list[int]:
    """Publish count numbered messages from ann and return their ids."""
    return [backend.publish(room, "ann", f"{prefix}{i}").id for i in range(count)]


# Both backends.


def test_ids_increase_per_room_under_concurrent_publishers(backend):
    """Concurrent publishers get distinct, consecutive ids per room, each thread's strictly increasing."""
    inbox = started(backend, "red", "blue")

    def work(index: int) -> dict[str, list[int]]:
        mine: dict[str, list[int]] = {"red": [], "blue": []}
        for i in range(40):
            room = "red" if (index + i) % 2 else "blue"
            mine[room].append(backend.publish(room, f"t{index}", f"{index}:{i}").id)
        return mine

    results = concurrently(8, work)
    for room in ("red", "blue"):
        per_thread = [result[room] for result in results]
        for ids in per_thread:
            assert ids == sorted(set(ids))
        every = sorted(i for ids in per_thread for i in ids)
        assert len(set(every)) == len(every) == 160
        assert every == list(range(every[0], every[0] + 160))
        inbox.wait(lambda box, room=room, every=every: len(box.ids(room)) >= len(every))
        assert inbox.ids(room) == every


def test_deliveries_keep_publish_order_with_presence_between(backend):
    """Deliveries come in id order, join and leave events where they happened, with their counts."""
    inbox = started(backend, "lobby")
    first = backend.publish("lobby", "ann", "one").id
    assert join(backend, "lobby", "m1", "Bob") == 1
    second = backend.publish("lobby", "ann", "two").id
    assert leave(backend, "lobby", "m1") == 0
    inbox.wait(lambda box: len(box.payloads("lobby")) >= 4)
    history = backend.replay("lobby", None, 2).messages
    assert [(message_id, payload) for _, message_id, payload in inbox.events] == [
        history[0][:2],
        (None, protocol.presence("join", "lobby", "Bob", 1)),
        history[1][:2],
        (None, protocol.presence("leave", "lobby", "Bob", 0)),
    ]
    assert [item.id for item in history] == [first, second]


def test_presence_events_name_the_member(backend):
    """Join and leave events carry what they say: the event and the member id, even when names are the same."""
    joined = []
    backend.start(lambda room, items: joined.extend(item.presence[:2] for item in items if item.id is None))
    backend.watch("lobby")
    join(backend, "lobby", "m-first", "Same")
    join(backend, "lobby", "m-second", "Same")
    leave(backend, "lobby", "m-first")
    wait_for(lambda: len(joined) == 3, 10, "three presence events")
    assert joined == [("join", "m-first"), ("join", "m-second"), ("leave", "m-first")]


def test_presence_counts_arrive_in_the_order_they_changed(backend):
    """Under concurrent joins and leaves the last event's count is the final count."""
    inbox = started(backend, "lobby")
    concurrently(40, lambda i: join(backend, "lobby", f"m{i}", f"u{i}"))
    concurrently(30, lambda i: leave(backend, "lobby", f"m{i}"))
    inbox.wait(lambda box: len(box.payloads("lobby")) >= 70)
    counts = [json.loads(payload)["online"] for payload in inbox.payloads("lobby")]
    assert counts[:40] == list(range(1, 41))
    assert counts[40:] == list(range(39, 9, -1))


def test_payload_is_protocol_chat(backend):
    """A message's payload, delivered and stored, is byte for byte protocol.chat of its fields and its ts."""
    inbox = started(backend, "lobby")
    text = '{"looks": "like json"} \u5fc3\u8df3 \\ "quoted"'
    message_id, ts = backend.publish("lobby", "Ada \u00e9", text)
    [(replayed_id, payload, *_)] = backend.replay("lobby", None, 1).messages
    assert replayed_id == message_id
    assert payload == protocol.chat(message_id, "lobby", "Ada \u00e9", text, ts)
    inbox.wait(lambda box: box.payloads("lobby") == [payload])
    assert abs(ts - time.time() * 1000) < 60_000


def test_replay_without_since_returns_the_last_limit(backend):
    """since None replays the last limit messages, oldest first, and none for limit 0."""
    ids = publish_many(backend, "lobby", 4)
    replay = backend.replay("lobby", None, REPLAY)
    assert [item.id for item in replay.messages] == ids[-REPLAY:]
    assert (replay.gap, replay.missed, replay.last) == (False, None, ids[-1])
    assert backend.replay("lobby", None, 0).messages == []
    assert [item.id for item in backend.replay("lobby", None, 100).messages] == ids


def test_replay_since_inside_the_window_returns_what_followed(backend):
    """since inside the window replays every later message, without a gap."""
    ids = publish_many(backend, "lobby", 4)
    replay = backend.replay("lobby", ids[0], REPLAY)
    assert [item.id for item in replay.messages] == ids[1:]
    assert (replay.gap, replay.missed) == (False, None)


def test_replay_since_the_last_id_is_empty(backend):
    """since equal to (or past) the last id replays nothing and reports no gap."""
    ids = publish_many(backend, "lobby", 3)
    for since in (ids[-1], ids[-1] + 10):
        replay = backend.replay("lobby", since, REPLAY)
        assert (replay.messages, replay.gap, replay.missed, replay.last) == ([], False, None, ids[-1])


def test_replay_gap_counts_exactly_what_was_evicted(backend):
    """since older than the window reports a gap with the exact number of messages missed."""
    ids = publish_many(backend, "lobby", SIZE + 7)
    replay = backend.replay("lobby", ids[1], REPLAY)
    assert replay.gap and replay.missed == SIZE + 7 - SIZE - 2
    assert [item.id for item in replay.messages] == ids[-SIZE:]
    edge = backend.replay("lobby", ids[-SIZE - 1], REPLAY)
    assert (edge.gap, [item.id for item in edge.messages]) == (False, ids[-SIZE:])
    just_out = backend.replay("lobby", ids[-SIZE - 2], REPLAY)
    assert (just_out.gap, just_out.missed) == (True, 1)


def test_replay_since_before_the_epoch_has_an_unknown_gap(backend):
    """since older than the room's first id reports a gap of unknown size and the whole window."""
    ids = publish_many(backend, "lobby", SIZE + 2)
    replay = backend.replay("lobby", 1, REPLAY)
    assert (replay.gap, replay.missed) == (True, None)
    assert [item.id for item in replay.messages] == ids[-SIZE:]


def test_window_keeps_only_the_last_history_size(backend):
    """History keeps the last HISTORY_SIZE messages of each room and evicts older ones."""
    red = publish_many(backend, "red", SIZE * 3)
    blue = publish_many(backend, "blue", 2)
    assert [item.id for item in backend.replay("red", None, 100).messages] == red[-SIZE:]
    assert [item.id for item in backend.replay("blue", None, 100).messages] == blue


def test_replay_of_an_empty_room(backend):
    """A room without messages replays nothing; an id from elsewhere gets an unknown gap."""
    assert backend.replay("empty", None, REPLAY).messages == []
    stale = backend.replay("empty", 1, REPLAY)
    assert (stale.messages, stale.gap, stale.missed) == ([], True, None)
    future = backend.replay("empty", 10**17, REPLAY)
    assert (future.messages, future.gap) == ([], False)


def test_presence_counts_are_exact_under_concurrent_joins_and_leaves(backend):
    """Concurrent joins return 1..N exactly once, leaves N-1..0, and users follow."""
    members = 64
    joined = concurrently(members, lambda i: join(backend, "lobby", f"m{i}", f"user {i:02}"))
    assert sorted(joined) == list(range(1, members + 1))
    assert join(backend, "lobby", "m0", "user 00") == members
    assert backend.users("lobby") == [f"user {i:02}" for i in range(members)]
    assert backend.users("elsewhere") == []
    left = concurrently(members // 2, lambda i: leave(backend, "lobby", f"m{i * 2}"))
    assert sorted(left) == list(range(members // 2, members))
    assert leave(backend, "lobby", "never-joined") == members // 2
    assert backend.users("lobby") == [f"user {i:02}" for i in range(1, members, 2)]


def test_the_memory_welcome_list_is_made_again_only_when_a_listed_member_leaves(factory):
    """Past the list limit, members beyond it come and go without remaking the room's list (encoded once for
    every welcome); a listed member's leave brings the next one in."""
    backend = factory("memory://", PRESENCE_LIST_LIMIT=3)
    for index in range(5):
        join(backend, "lobby", f"m{index}", f"u{index}")
    listed = backend.enter("lobby", "m5", "u5", None, 0).users
    assert list(listed) == ["u0", "u1", "u2"]
    leave(backend, "lobby", "m4")
    assert backend.enter("lobby", "m6", "u6", None, 0).users is listed
    leave(backend, "lobby", "m1")
    relisted = backend.enter("lobby", "m7", "u7", None, 0).users
    assert list(relisted) == ["u0", "u2", "u3"]
    assert backend.presence("lobby") == (6, ["u0", "u2", "u3"])
    welcome = protocol.presence("welcome", "lobby", "u7", 6, relisted)
    assert welcome == protocol.presence("welcome", "lobby", "u7", 6, ["u0", "u2", "u3"])
    assert json.loads(welcome)["users"] == ["u0", "u2", "u3"]


# Redis only: several processes, failures, and what lives in Redis.


def test_two_processes_share_messages_presence_and_one_sequence(make_redis):
    """Two instances on one Redis see each other's messages and members, with one id sequence."""
    one, two = make_redis(), make_redis()
    inboxes = [started(one, "lobby"), started(two, "lobby")]

    def work(index: int) -> list[int]:
        sender = (one, two)[index % 2]
        return publish_many(sender, "lobby", 30, prefix=f"{index}:")

    every = sorted(i for ids in concurrently(4, work) for i in ids)
    assert every == list(range(every[0], every[0] + 120))
    assert join(two, "lobby", "z", "Zed") == 1
    for inbox in inboxes:
        inbox.wait(lambda box: len(box.payloads("lobby")) >= 121)
        assert inbox.ids("lobby") == every
        assert inbox.payloads("lobby")[-1] == protocol.presence("join", "lobby", "Zed", 1)
    assert inboxes[0].payloads("lobby") == inboxes[1].payloads("lobby")
    assert leave(two, "lobby", "z") == 0
    assert join(one, "lobby", "a", "Ann") == 1
    assert join(two, "lobby", "b", "Bob") == 2
    assert one.users("lobby") == two.users("lobby") == ["Ann", "Bob"]
    assert leave(one, "lobby", "b") == 2
    assert leave(two, "lobby", "b") == 1


def test_watch_counts_clients_and_unwatch_stops_reading(make_redis):
    """A room stays watched until every watch has its unwatch, then stops being delivered."""
    reader, writer = make_redis(), make_redis()
    inbox = started(reader, "lobby", "lobby")
    reader.unwatch("lobby")
    kept = writer.publish("lobby", "ann", "still watched").id
    inbox.wait(lambda box: box.ids("lobby") == [kept])
    reader.unwatch("lobby")
    writer.publish("lobby", "ann", "nobody watches")
    reader.watch("other")
    marker = writer.publish("other", "ann", "marker").id
    inbox.wait(lambda box: box.ids("other") == [marker])
    assert inbox.ids("lobby") == [kept]


def test_watch_sees_everything_added_after_it_returns(make_redis):
    """An entry added right after watch() returns is delivered, even while the reader blocks."""
    reader, writer = make_redis(), make_redis()
    inbox = started(reader)
    for index in range(20):
        room = f"room-{index}"
        reader.watch(room)
        message_id = writer.publish(room, "ann", "first").id
        inbox.wait(lambda box, room=room, message_id=message_id: box.ids(room) == [message_id], timeout=10)


def test_reader_survives_a_redis_crash_without_loss_or_duplicates(persistent, factory):
    """Everything acknowledged around a Redis crash and restart is delivered once, in order."""
    reader, writer = factory(persistent.url), factory(persistent.url)
    inbox = started(reader, "lobby")
    before = publish_many(writer, "lobby", 5)
    inbox.wait(lambda box: box.ids("lobby") == before)
    acknowledged: list[int] = []
    failures = 0
    stop = threading.Event()

    def keep_publishing() -> None:
        nonlocal failures
        count = 0
        while not stop.is_set():
            count += 1
            try:
                acknowledged.append(writer.publish("lobby", "ann", f"during {count}").id)
            except Unavailable:
                failures += 1
                stop.wait(0.01)

    publisher = threading.Thread(target=keep_publishing, name="test-publisher")
    publisher.start()
    try:
        wait_for(lambda: len(acknowledged) > 20, 10, "publishes before the crash")
        persistent.stop(signal.SIGKILL)
        wait_for(lambda: failures > 0, 10, "a publish to fail")
        wait_for(lambda: not reader.healthy(), 10, "the reader to notice")
        persistent.start()
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) > count + 20, 15, "publishes after the restart")
    finally:
        stop.set()
        publisher.join(10)
    after = publish_many(writer, "lobby", 5, prefix="after")
    assert after[0] > acknowledged[-1] > before[-1]
    inbox.wait(lambda box: box.ids("lobby")[-1:] == after[-1:], timeout=15)
    delivered = inbox.ids("lobby")
    assert delivered == sorted(set(delivered))
    assert set(before + acknowledged + after) <= set(delivered)
    assert reader.healthy()


def test_unreachable_redis_raises_unavailable_quickly(persistent, factory):
    """While Redis is down or hung, every call raises Unavailable instead of waiting for it."""
    backend = factory(persistent.url)
    inbox = started(backend, "lobby")
    backend.publish("lobby", "ann", "before")
    persistent.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(Unavailable):
            backend.publish("lobby", "ann", "while hung")
        wait_for(lambda: not backend.healthy(), 10, "healthy() to turn false")
    finally:
        persistent.process.send_signal(signal.SIGCONT)
    persistent.stop()
    calls = [
        lambda: backend.publish("lobby", "ann", "while down"),
        lambda: backend.replay("lobby", None, 3),
        lambda: join(backend, "lobby", "m", "Ann"),
        lambda: leave(backend, "lobby", "m"),
        lambda: backend.users("lobby"),
        lambda: backend.watch("elsewhere"),
    ]
    for call in calls:
        with pytest.raises(Unavailable):
            call()
    persistent.start()
    wait_for(backend.healthy, 15, "healthy() to turn true")
    assert [item for item in backend.replay("lobby", None, 10).messages if b"while down" in item.payload] == []
    later = backend.publish("lobby", "ann", "after").id
    inbox.wait(lambda box: box.ids("lobby")[-1:] == [later], timeout=15)


def test_a_backend_started_while_redis_is_down_recovers(persistent, factory):
    """A process that starts while Redis is down refuses calls with Unavailable, then works when it is back."""
    persistent.stop()
    backend = factory(persistent.url)
    inbox = started(backend)
    with pytest.raises(Unavailable):
        backend.watch("lobby")
    with pytest.raises(Unavailable):
        backend.publish("lobby", "ann", "too early")
    assert not backend.healthy()
    persistent.start()
    wait_for(backend.healthy, 15, "healthy() once Redis is up")
    backend.watch("lobby")
    message_id = backend.publish("lobby", "ann", "on time").id
    inbox.wait(lambda box: box.ids("lobby") == [message_id])


def test_ids_keep_growing_after_a_restart_and_after_data_loss(persistent, factory):
    """Ids survive a restart with persistence, and restart above the old ones when Redis forgets."""
    backend = factory(persistent.url)
    before = publish_many(backend, "lobby", 3)
    persistent.restart()
    wait_for(backend.healthy, 15, "healthy() after the restart")
    resumed = backend.publish("lobby", "ann", "resumed").id
    assert resumed == before[-1] + 1
    client = redis.Redis.from_url(persistent.url)
    client.delete("chat:{lobby}:meta")
    client.close()
    recounted = backend.publish("lobby", "ann", "counter lost, stream kept").id
    assert recounted > resumed
    replay = backend.replay("lobby", resumed, REPLAY)
    assert (replay.gap, replay.missed, [item.id for item in replay.messages]) == (True, None, [recounted])
    flushall(persistent.url)
    fresh = backend.publish("lobby", "ann", "after the loss").id
    assert fresh > recounted + 1
    replay = backend.replay("lobby", resumed, REPLAY)
    assert (replay.gap, replay.missed) == (True, None)
    assert [item.id for item in replay.messages] == [fresh]


GHOST = """
import sys
from chat import backends
settings = {"HISTORY_SIZE": 5, "HISTORY_REPLAY": 3, "PRESENCE_TTL": float(sys.argv[2]), "ROOM_EXPIRY": 600}
backend = backends.create(sys.argv[1], settings)
backend.start(lambda room, items: None)
for index in range(3):
    backend.enter("lobby", f"ghost-{index}", f"ghost {index}", None, 0)
print("joined", flush=True)
sys.stdin.read()
"""


def test_members_of_a_killed_process_vanish_within_the_ttl(make_redis, clean_redis_url):
    """Members of a process killed without leaving stay while it lives and vanish once PRESENCE_TTL has passed."""
    ttl = 1.5
    alive = make_redis(PRESENCE_TTL=ttl)
    started(alive)
    join(alive, "lobby", "me", "alive")
    ghost = subprocess.Popen(
        [sys.executable, "-c", GHOST, clean_redis_url, str(ttl)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert ghost.stdout.readline().strip() == "joined"
        assert holds(lambda: len(alive.users("lobby")) == 4, ttl * 2)
        ghost.send_signal(signal.SIGKILL)
        ghost.wait(5)
        wait_for(lambda: alive.users("lobby") == ["alive"], ttl + 10, "the ghosts to vanish")
        assert join(alive, "lobby", "me too", "alive") == 2
    finally:
        ghost.kill()
        ghost.wait(5)


def test_a_process_in_more_rooms_than_one_renewal_pipeline_stays_in_every_one(make_redis):
    """Renewal reaches every room of a process in more rooms than one pipeline carries: none is swept."""
    ttl = 1.0
    alive, other = make_redis(PRESENCE_TTL=ttl), make_redis(PRESENCE_TTL=ttl)
    started(alive)
    rooms = [f"r{index}" for index in range(redis_presence.CHUNK * 2 + 10)]
    for room in rooms:
        join(alive, room, "a", "Ann")
    assert holds(lambda: all(other.users(room) == ["Ann"] for room in (rooms[0], rooms[-1])), ttl * 3)
    assert all(other.users(room) == ["Ann"] for room in rooms)


def test_presence_is_written_again_after_redis_forgets_it(make_redis, clean_redis_url):
    """A live process writes its members back within the TTL after Redis loses them."""
    backend = make_redis(PRESENCE_TTL=1.0)
    started(backend)
    join(backend, "lobby", "a", "Ann")
    join(backend, "lobby", "b", "Bob")
    flushall(clean_redis_url)
    assert backend.users("lobby") == []
    wait_for(lambda: backend.users("lobby") == ["Ann", "Bob"], 5, "presence to come back")
    assert leave(backend, "lobby", "a") == 1


def test_close_removes_this_process_members_and_is_idempotent(make_redis):
    """close() takes this process's members out of every room at once, may run twice, and ends service."""
    leaving, staying = make_redis(), make_redis()
    started(leaving)
    join(leaving, "lobby", "a", "Ann")
    join(leaving, "red", "b", "Bob")
    join(staying, "lobby", "c", "Cid")
    leaving.close()
    leaving.close()
    assert staying.users("lobby") == ["Cid"]
    assert staying.users("red") == []
    assert not leaving.healthy()
    with pytest.raises(Unavailable):
        leaving.publish("lobby", "ann", "after close")


def test_streams_stay_bounded(make_redis, clean_redis_url):
    """Streams keep about RETAIN messages, and presence between two messages is capped."""
    backend = make_redis()
    client = redis.Redis.from_url(clean_redis_url)
    for index in range(redis_backend.RETAIN + 300):
        backend.publish("busy", "ann", str(index))
    assert redis_backend.RETAIN <= client.xlen("chat:{busy}:log") <= redis_backend.RETAIN + 200
    for index in range(redis_backend.PRESENCE_BACKLOG + 200):
        join(backend, "quiet", f"m{index}", "Ann")
    assert client.xlen("chat:{quiet}:log") == redis_backend.PRESENCE_BACKLOG
    client.close()


def test_rooms_empty_and_silent_past_the_expiry_are_forgotten(url, factory):
    """A room nobody is in and nobody wrote to for ROOM_EXPIRY is gone; an occupied quiet room stays; ids still grow."""
    backend = factory(url, ROOM_EXPIRY=1.0, PRESENCE_TTL=1)
    started(backend, "gone", "kept")
    join(backend, "gone", "m1", "ann")
    leave(backend, "gone", "m1")
    last = max(backend.publish("gone", "ann", f"old {n}").id for n in range(3))
    join(backend, "kept", "m2", "bob")
    backend.publish("kept", "bob", "still here")

    def forgotten() -> bool:
        # The memory backend sweeps on use, as a busy server would.
        backend.publish("traffic", "cat", "tick")
        return not backend.replay("gone", None, REPLAY).messages

    wait_for(forgotten, 10, "the empty, silent room to expire")
    if url.startswith("redis://"):
        assert redis.Redis.from_url(url).keys("chat:{gone}:*") == []
    assert b"still here" in backend.replay("kept", None, REPLAY).messages[-1][1]
    resumed = backend.replay("gone", last, REPLAY)
    assert resumed.gap and resumed.missed is None
    assert backend.publish("gone", "ann", "new").id > last


def test_an_identified_sender_is_carried_on_the_message(backend):
    """A message published with a user id carries it as "user", live and in the replay; a guest's has none."""
    inbox = started(backend, "lobby")
    backend.publish("lobby", "Ann", "signed", user="u-42")
    backend.publish("lobby", "guest-1", "anonymous")
    inbox.wait(lambda box: len(box.payloads("lobby")) == 2)
    live = [json.loads(payload) for payload in inbox.payloads("lobby")]
    replayed = [json.loads(item.payload) for item in backend.replay("lobby", None, 2).messages]
    for messages in (live, replayed):
        assert messages[0]["user"] == "u-42" and "user" not in messages[1]


def test_a_process_swept_after_an_outage_writes_all_its_members_back(make_redis):
    """A process whose liveness lapsed is swept; its next join in the room brings back every member it still has."""
    alive, other = make_redis(PRESENCE_TTL=30), make_redis(PRESENCE_TTL=30)
    started(alive)
    started(other)
    join(alive, "lobby", "a1", "Ann")
    join(alive, "lobby", "a2", "Abe")
    # What an outage longer than the TTL leaves: the deadline passed, and someone else's join sweeps.
    alive._scripts["depart"](keys=[redis_keys.presence("lobby")[1]], args=[alive._pid], client=alive._client)
    assert join(other, "lobby", "b1", "Bob") == 1
    join(alive, "lobby", "a3", "Amy")
    wait_for(lambda: other.users("lobby") == ["Abe", "Amy", "Ann", "Bob"], 5, "the swept members to come back")


def evalsha_calls(admin: redis.Redis) -> int:
    """Return how many scripts Redis ran by their digest."""
    return admin.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


def test_messages_sent_while_a_group_is_on_its_way_go_out_together(make_redis, clean_redis_url):
    """Publishes to a room whose last group Redis has not answered wait for it, then go out as one script call."""
    backend = make_redis()
    inbox = started(backend, "busy")
    first = backend.publish("busy", "ann", "before").id
    admin = redis.Redis.from_url(clean_redis_url)
    before = evalsha_calls(admin)
    admin.client_pause(30_000, all=False)
    waiting = [threading.Event() for _ in range(20)]

    def send(index: int) -> int:
        waiting[index].set()
        return backend.publish("busy", f"t{index}", f"m{index}").id

    try:
        with ThreadPoolExecutor(21, thread_name_prefix="test-sender") as pool:
            held = pool.submit(backend.publish, "busy", "ann", "held")
            wait_for(lambda: admin.info("clients")["blocked_clients"] == 1, message="the first group to be held")
            queued = [pool.submit(send, index) for index in range(20)]
            wait_for(lambda: all(event.is_set() for event in waiting), message="every sender to publish")
            admin.client_unpause()
            ids = [held.result(10).id] + [future.result(10) for future in queued]
    finally:
        admin.client_unpause()
    assert sorted(ids) == list(range(first + 1, first + 22))
    assert ids[0] == first + 1
    assert evalsha_calls(admin) - before <= 10
    inbox.wait(lambda box: len(box.ids("busy")) == 22)
    assert inbox.ids("busy") == list(range(first, first + 22))
    texts = [json.loads(payload)["message"] for payload in inbox.payloads("busy")[2:]]
    assert sorted(texts) == sorted(f"m{index}" for index in range(20))


def test_a_change_is_atomic_in_the_log_and_leaves_no_copy_of_the_old_text(backend):
    """A change is delivered at the room's next id; replays give its message as it stands, a resume the changes
    after since, and the window holds no copy of a text edited away (on one server and on a cluster)."""
    inbox = started(backend, "ch")
    first, second = publish_many(backend, "ch", 2, "old text ")
    inbox.wait(lambda box: len(box.payloads("ch")) == 2)
    with pytest.raises(Refused):
        backend.change("ch", Change("edit", first, "someone", "S", "mine now"))
    edited = backend.change("ch", Change("edit", first, None, "mod", "new text"))
    assert edited.id == second + 1 and json.loads(edited.state)["message"] == "new text"
    on = backend.change("ch", Change("react", first, "u1", "U", emoji="👍"))
    off = backend.change("ch", Change("react", first, "u1", "U", emoji="👍"))
    assert (on.on, off.on, on.id) == (True, False, edited.id + 1)
    inbox.wait(lambda box: len(box.payloads("ch")) == 5)
    assert [json.loads(p)["state"] for p in inbox.payloads("ch")] == [2, 2, 6, 6, 6]
    fresh = backend.replay("ch", None, 10).messages
    assert [json.loads(item.payload)["message"] for item in fresh] == ["new text", "old text 1"]
    assert json.loads(fresh[0].payload)["edited"] and "reactions" not in json.loads(fresh[0].payload)
    resumed = backend.replay("ch", first, 10).messages
    assert [item.id for item in resumed] == [second, edited.id, on.id, off.id]
    assert "old text 0" not in json.dumps([item.payload.decode() for item in backend.replay("ch", 0, 10).messages])
    assert json.loads(backend.look("ch", first))["message"] == "new text"
    backend.change("ch", Change("delete", first, None, "mod"))
    with pytest.raises(Refused):
        backend.change("ch", Change("react", first, "u1", "U", emoji="👍"))
    assert all(b"new text" not in item.payload for item in backend.replay("ch", 0, 10).messages)
    with pytest.raises(Missing):
        backend.change("ch", Change("edit", 12345, None, "mod", "x"))


def test_a_reader_catching_up_gets_a_message_changed_meanwhile(make_redis):
    """A reader that catches up from the stream past a message edited meanwhile (its entry gone) gets it back,
    as it stands, at its place before the change."""
    backend = make_redis()
    inbox = started(backend)
    first = backend.publish("cu", "ann", "before").id
    edit = backend.change("cu", Change("edit", first, None, "mod", "after"))
    backend._subscriber.watch("cu", (first - 1, 0))
    inbox.wait(lambda box: len(box.payloads("cu")) == 2)
    assert [json.loads(payload)["state"] for payload in inbox.payloads("cu")] == [2, 6]
    assert json.loads(inbox.payloads("cu")[0])["message"] == "after" and inbox.ids("cu") == [first, edit.id]


def test_a_rooms_changed_messages_live_as_long_as_its_stream(make_redis, clean_redis_url):
    """A publish gives the states of a room's changed messages the stream's expiry too, so a room still in use
    whose last change is older than the expiry keeps its edits (the stream no longer holds their old entries)."""
    backend = make_redis()
    started(backend)
    first = backend.publish("kept", "ann", "before").id
    backend.change("kept", Change("edit", first, None, "mod", "after"))
    admin = redis.Redis.from_url(clean_redis_url)
    for key in redis_keys.folds("kept"):
        admin.pexpire(key, 1000)
    backend.publish("kept", "ann", "later")
    assert all(admin.pttl(key) > 60_000 for key in redis_keys.folds("kept"))
    assert json.loads(backend.look("kept", first))["message"] == "after"


def test_the_memory_backends_record_of_edits_stays_bounded(factory):
    """Editing message after message of a long-lived room keeps what the backend holds bounded by its window,
    while an edit still in the window keeps superseding its predecessor there."""
    backend = factory("memory://", HISTORY_SIZE=10)

    def edit_messages(count: int) -> None:
        for n in range(count):
            sent = backend.publish("long", "ana", f"message {n}", user="ana")
            backend.change("long", Change("edit", sent.id, "ana", "ana", f"edited {n}"))
            backend.change("long", Change("edit", sent.id, "ana", "ana", f"edited {n} again"))

    edit_messages(1000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        edit_messages(20_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000, f"20,000 edited messages grew the backend by {grown:,} bytes"
    window = backend.replay("long", None, 10).messages
    assert window and all(item.payload.count(b"again") == 1 for item in window)
