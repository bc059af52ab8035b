"""The replay gate: held batches, and the floor that keeps what was replayed or counted from coming twice."""

from __future__ import annotations

from chat import protocol
from chat.backends import Item, Presence
from chat.socket import wire
from chat.socket.batch import Batch
from chat.socket.gate import Gate

LIMIT = 200


def chat(message_id: int) -> Item:
    """Return the item of a chat message with that id."""
    return Item(message_id, protocol.chat(message_id, "lobby", "a", f"m{message_id}", 0), None, (message_id, 0))


def join(after: int, k: int, member: str, online: int) -> Item:
    """Return the k-th presence event after chat message after: member joining, online after it."""
    said = Presence("join", member, member, online)
    return Item(None, protocol.presence("join", "lobby", member, online), said, (after, k))


def test_events_at_or_before_the_floor_are_dropped_and_the_floor_moves():
    """Messages and presence events the replay and welcome covered are dropped; later ones pass, in order."""
    gate = Gate()
    gate.floor = (6, 1)
    items = [chat(5), join(5, 1, "old", 3), chat(6), join(6, 1, "mine", 4), join(6, 2, "new", 5), chat(7)]
    data = gate.render(Batch.of(items, LIMIT), 1, None)
    assert data == wire.text_frame(items[4].payload) + wire.text_frame(chat(7).payload)
    assert gate.floor == (7, 0)
    assert gate.render(Batch.of([chat(6)], LIMIT), 1, None) == b""


def test_an_older_count_never_follows_the_welcome():
    """A join counted before this connection's welcome (online 3 < 4) is not delivered after it."""
    gate = Gate()
    gate.floor = (9, 2)
    assert gate.render(Batch.of([join(9, 1, "earlier", 3)], LIMIT), 1, None) == b""


def test_a_batch_past_the_floor_is_shared_not_copied():
    """A batch wholly after the floor is written as the very bytes every connection of its version shares."""
    gate = Gate()
    gate.floor = (3, 0)
    batch = Batch.of([join(3, 1, "other", 2), chat(4)], LIMIT)
    assert gate.render(batch, 1, None) is batch.frames[1]


def test_v2_gets_chats_without_single_presence_events_and_v1_loses_them_in_big_rooms():
    """Protocol v2 never gets per-event joins; v1 gets them only while the room has at most the list limit."""
    small, big = join(1, 1, "a", 3), join(1, 2, "b", LIMIT + 1)
    batch = Batch.of([small, big, chat(2)], LIMIT)
    assert Gate().render(batch, 2, None) == wire.text_frame(chat(2).payload)
    assert Gate().render(batch, 1, None) == wire.text_frame(small.payload) + wire.text_frame(chat(2).payload)


def test_hold_counts_bytes_and_release_hands_them_back_in_order():
    """Held batches are counted in bytes and released oldest first, leaving nothing."""
    gate = Gate()
    first, second = Batch.of([chat(1)], LIMIT), Batch.of([chat(2)], LIMIT)
    gate.hold(first, 1)
    gate.hold(second, 1)
    assert gate.held == len(first.frames[1]) + len(second.frames[1])
    assert gate.release() == [first, second]
    assert (gate.pending, gate.held) == ([], 0)


def test_a_held_digest_counts_what_a_v2_client_will_be_sent():
    """A v2 presence digest (no v1 frames) held for a joining v2 client counts its own bytes, not v1's nothing."""
    gate = Gate()
    digest = Batch.digest(join(1, 1, "a", 3))
    gate.hold(digest, 2)
    assert gate.held == len(digest.frames[2]) > 0


def test_an_encoder_renders_for_one_connection():
    """With an encoder (compression), each payload is encoded for this connection."""
    data = Gate().render(Batch.of([chat(1), chat(2)], LIMIT), 1, lambda payload: b"<" + payload + b">")
    assert data == b"<" + chat(1).payload + b"><" + chat(2).payload + b">"


def test_events_a_version_does_not_get_leave_its_floor_where_it_was():
    """A join a v2 client gets only as a digest does not move its floor, so the digest that follows arrives."""
    gate = Gate()
    gate.floor = (1, 1)
    assert gate.render(Batch.of([join(1, 2, "bob", 2)], LIMIT), 2, None) == b""
    assert gate.floor == (1, 1)
    digest = Item(None, protocol.digest("lobby", ["bob"], [], 1, 0, 2), None, (1, 2))
    assert gate.render(Batch.digest(digest), 2, None) == wire.text_frame(digest.payload)


def test_a_digest_older_than_a_message_delivered_meanwhile_still_arrives():
    """A digest stands at its last presence event; a chat message delivered while it waited does not drop it."""
    gate = Gate()
    gate.start((1, 0))
    assert gate.render(Batch.of([chat(2)], LIMIT), 2, None) == wire.text_frame(chat(2).payload)
    digest = Item(None, protocol.digest("lobby", ["bob"], ["guest-1"], 1, 1, 2), None, (1, 2))
    assert gate.render(Batch.digest(digest), 2, None) == wire.text_frame(digest.payload)
    assert gate.render(Batch.digest(digest), 2, None) == b"", "a digest comes once"
    stale = Item(None, protocol.digest("lobby", ["carol"], [], 1, 0, 3), None, (0, 5))
    assert gate.render(Batch.digest(stale), 2, None) == b"", "a digest the welcome covers is dropped"
