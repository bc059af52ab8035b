"""The replay gate: held batches, the id floor, and the own join recognised by member id."""

from __future__ import annotations

from chat import protocol, wire
from chat.backends import Item
from chat.fanout import Batch
from chat.gate import Gate

JOIN = protocol.presence("join", "lobby", "sam", 2)


def chat(message_id: int) -> Item:
    """Return the item of a chat message with that id."""
    return Item(message_id, protocol.chat(message_id, "lobby", "a", f"m{message_id}", 0))


def test_own_join_is_dropped_by_member_not_by_bytes():
    """Another member's join with the very same bytes is delivered; only this member's own join is dropped."""
    gate = Gate("mine")
    batch = Batch.of([Item(None, JOIN, "theirs"), Item(None, JOIN, "mine"), chat(5)])
    data = gate.render(batch, None)
    assert data == wire.text_frame(JOIN) + wire.text_frame(chat(5).payload)
    assert gate.own is None


def test_once_the_own_join_is_seen_batches_are_shared_again():
    """After its own join, a connection gets each batch's shared frame, not a copy of its own."""
    gate = Gate("mine")
    gate.render(Batch.of([Item(None, JOIN, "mine")]), None)
    later = Batch.of([Item(None, JOIN, "other"), chat(9)])
    assert gate.render(later, None) is later.frame


def test_a_batch_without_the_own_join_is_shared_while_it_is_awaited():
    """While its own join has not arrived, batches that do not carry it are still sent as they are."""
    gate = Gate("mine")
    batch = Batch.of([Item(None, JOIN, "other"), chat(3)])
    assert gate.render(batch, None) is batch.frame
    assert gate.own == "mine"


def test_floor_drops_what_the_replay_covered_and_moves_up():
    """Messages at or below the floor are dropped; the floor moves to the batch's last id."""
    gate = Gate("mine")
    gate.floor = 6
    data = gate.render(Batch.of([chat(5), chat(6), chat(7)]), None)
    assert data == wire.text_frame(chat(7).payload)
    assert gate.floor == 7
    assert gate.render(Batch.of([chat(6)]), None) == b""


def test_hold_counts_bytes_and_release_hands_them_back_in_order():
    """Held batches are counted in bytes and released oldest first, leaving nothing."""
    gate = Gate("mine")
    first, second = Batch.of([chat(1)]), Batch.of([chat(2)])
    gate.hold(first)
    gate.hold(second)
    assert gate.held == len(first.frame) + len(second.frame)
    assert gate.release() == [first, second]
    assert (gate.pending, gate.held) == ([], 0)


def test_an_encoder_renders_for_one_connection():
    """With an encoder (compression), each payload is encoded for this connection."""
    gate = Gate("mine")
    data = gate.render(Batch.of([chat(1), chat(2)]), lambda payload: b"<" + payload + b">")
    assert data == b"<" + chat(1).payload + b"><" + chat(2).payload + b">"
