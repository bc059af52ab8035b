"""Presence digests for protocol v2: one per room per interval, netted, with the exact count."""

from __future__ import annotations

import json
import time

from chat.backends import Presence
from chat.fanout.coalescer import RATE, Coalescer


def taken(coalescer: Coalescer, now: float) -> list[dict]:
    """Return the digests due by now, decoded."""
    return [json.loads(item.payload) for _, item in coalescer.take(now)]


def test_joins_and_leaves_within_an_interval_make_one_event_with_both_lists_and_the_final_count():
    """Three joins and a leave of someone already there arrive as one digest with names and the last count."""
    coalescer = Coalescer(0.25, 200)
    coalescer.add("lobby", Presence("join", "m1", "Ann", 5), (1, 1))
    coalescer.add("lobby", Presence("join", "m2", "Bob", 6), (1, 2))
    coalescer.add("lobby", Presence("leave", "m0", "Old", 5), (1, 3))
    coalescer.add("lobby", Presence("join", "m3", "Cid", 6), (1, 4))
    [digest] = taken(coalescer, time.monotonic())
    assert digest["event"] == "presence" and digest["state"] == 3
    assert (digest["joins"], digest["leaves"], digest["joined"], digest["left"], digest["online"]) == (
        ["Ann", "Bob", "Cid"], ["Old"], 3, 1, 6,
    )
    assert coalescer.due() is None


def test_a_join_and_its_leave_within_one_interval_net_out():
    """A member who came and went within one interval is in neither list."""
    coalescer = Coalescer(0.25, 200)
    coalescer.add("lobby", Presence("join", "m1", "Ann", 4), (1, 1))
    coalescer.add("lobby", Presence("leave", "m1", "Ann", 3), (1, 2))
    [digest] = taken(coalescer, time.monotonic())
    assert (digest["joins"], digest["leaves"], digest["online"]) == ([], [], 3)


def test_the_next_digest_of_a_room_waits_an_interval():
    """After one digest, the next events of that room are held until an interval has passed."""
    coalescer = Coalescer(10.0, 200)
    coalescer.add("lobby", Presence("join", "m1", "Ann", 1), (1, 1))
    now = time.monotonic()
    assert len(taken(coalescer, now)) == 1
    coalescer.add("lobby", Presence("join", "m2", "Bob", 2), (1, 2))
    assert taken(coalescer, now + 1) == []
    assert coalescer.due() >= now + 10
    assert [d["joins"] for d in taken(coalescer, now + 10.5)] == [["Bob"]]


def test_a_big_rooms_next_digest_waits_until_the_last_one_is_paid_for():
    """After a digest to n members, the room's next waits n / RATE seconds when that is longer than the interval."""
    coalescer = Coalescer(0.25, 200)
    coalescer.add("big", Presence("join", "m1", "Ann", RATE * 4), (1, 1))
    now = time.monotonic()
    assert len(taken(coalescer, now)) == 1
    coalescer.add("big", Presence("join", "m2", "Bob", RATE * 4 + 1), (1, 2))
    assert taken(coalescer, now + 1) == []
    assert coalescer.due() >= now + 4
    assert [d["online"] for d in taken(coalescer, now + 4)] == [RATE * 4 + 1]


def test_above_the_list_limit_a_digest_has_counts_only():
    """A room past the list limit gets counts and no names."""
    coalescer = Coalescer(0.25, 2)
    for number in range(5):
        coalescer.add("big", Presence("join", f"m{number}", f"u{number}", number + 1), (1, number + 1))
    [digest] = taken(coalescer, time.monotonic())
    assert (digest["joins"], digest["joined"], digest["online"]) == ([], 5, 5)


def test_rooms_are_digested_apart():
    """Each room gets its own digest with its own count."""
    coalescer = Coalescer(0.25, 200)
    coalescer.add("red", Presence("join", "m1", "Ann", 1), (1, 1))
    coalescer.add("blue", Presence("join", "m2", "Bob", 7), (1, 1))
    digests = {d["room"]: d["online"] for d in taken(coalescer, time.monotonic())}
    assert digests == {"red": 1, "blue": 7}
