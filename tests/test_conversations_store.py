"""Conversations in the store, on SQLite and on a real PostgreSQL: access, read positions, a user's rooms, and the
figure of GET /api/me/rooms for a user in 500 rooms."""

from __future__ import annotations

import test_store
from postgres_server import clean_postgres_url, postgres_url  # noqa: F401  (fixtures)

from chat.store import Access, Stored, create
from chat.store import conversations as sql

NOW_MS = 1_800_000_000_000
#: The message store's fixtures: every test runs on SQLite and on PostgreSQL.
store_url, opened, settings = test_store.store_url, test_store.opened, test_store.settings


def message(room: str, message_id: int, user: str | None) -> Stored:
    """Return a message of room sent by user (None: a guest or the API)."""
    return Stored(room, message_id, NOW_MS + message_id, (user or "guest").title(), f"m{message_id}", user)


def test_access_outlives_a_restart(opened, store_url):
    """A private room's members, bans and mutes are read back by another store on the same database."""
    store = opened()
    store.change(sql.put_room("team", True, ["ana", "bo"]) + [(sql.ADD, ("team", "ban", "cy")),
                                                               (sql.ADD, ("team", "mute", "bo"))])
    store.close()
    again = create(store_url, settings(), "/nonexistent")
    try:
        assert again.access("team") == Access(True, None, frozenset({"ana", "bo"}), frozenset({"cy"}),
                                              frozenset({"bo"}))
        assert again.access("elsewhere") == Access()
    finally:
        again.close()


def test_unread_counts_others_messages_past_the_read_position(opened):
    """Unread leaves out the user's own messages and those at or before its position, which only moves forward."""
    store = opened()
    store.change(sql.put_room("team", True, ["ana", "bo"]))
    for message_id, user in ((1, "ana"), (2, "bo"), (3, "ana"), (4, None)):
        store.append(message(room="team", message_id=message_id, user=user))
    assert [(s.room, s.unread, s.last.id) for s in store.rooms_of("bo")] == [("team", 3, 4)]
    store.read("team", "bo", 3)
    store.read("team", "bo", 1)
    assert [(s.read, s.unread) for s in store.rooms_of("bo")] == [(3, 1)]
    assert store.read_of("team", "bo") == 3 and store.unread("team", "bo", 3) == 1


def test_a_users_rooms_come_newest_activity_first(opened):
    """Private rooms the user is a member of and open rooms it has joined, the one with the newest message first."""
    store = opened()
    store.change(sql.put_room("quiet", True, ["ana"]) + sql.put_room("dm-x", True, ["ana", "bo"], ("ana", "bo")))
    store.read("open", "ana", 0)
    for room, message_id in (("dm-x", 5), ("open", 7), ("quiet", 2)):
        store.append(message(room, message_id, "zed"))
    summaries = store.rooms_of("ana")
    assert [(s.room, s.private, s.dm) for s in summaries] == [
        ("open", False, None), ("dm-x", True, ("ana", "bo")), ("quiet", True, None)]
    assert store.rooms_of("nobody") == []


def test_a_user_in_500_rooms_gets_each_rooms_unread_count_newest_first(opened):
    """rooms_of for a user in 500 rooms, each with 20 messages (5 of others' unread), lists all 500, newest first.

    How fast it answers is measured by ``python -m bench.rooms``, not here.
    """
    store = opened()
    rooms = [f"r{n:03d}" for n in range(500)]
    store.change([statement for room in rooms for statement in sql.put_room(room, True, ["ana", "bo"])])
    for n, room in enumerate(rooms):
        for k in range(20):
            store.append(message(room, 1000 * n + k + 1, "bo" if k % 2 else "ana"))
        store.read(room, "ana", 1000 * n + 10)
    store.flush()
    summaries = store.rooms_of("ana")
    assert len(summaries) == 500 and {s.unread for s in summaries} == {5}
    assert [s.room for s in summaries] == rooms[::-1]
