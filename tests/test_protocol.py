"""The protocol layer: validation and outbound events, with no sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chat import protocol


def test_room_defaults_to_lobby():
    """No room, or an empty one, means the lobby."""
    assert protocol.room(None) == protocol.room("") == "lobby"


@pytest.mark.parametrize("text", ["a", "room-1", "under_score", "x" * 32])
def test_room_accepts_the_allowed_alphabet(text):
    """Rooms of 1-32 of a-z 0-9 _ - are accepted as given."""
    assert protocol.room(text) == text


@pytest.mark.parametrize("text", ["Upper", "with space", "x" * 33, "ümlaut", "../etc", "a\n"])
def test_room_refuses_anything_else(text):
    """Other room names raise ProtocolError."""
    with pytest.raises(protocol.ProtocolError):
        protocol.room(text)


def test_name_is_trimmed_and_defaults_to_a_guest():
    """Names are trimmed; a missing or blank name becomes guest- and 4 hex digits."""
    assert protocol.name("  Ada  ") == "Ada"
    for blank in (None, "", "   "):
        guest = protocol.name(blank)
        assert guest.startswith("guest-") and len(guest) == 10
        int(guest[6:], 16)


@pytest.mark.parametrize("text", ["x" * 33, "bell\x07", "tab\tinside", "nul\x00"])
def test_name_refuses_long_or_control_characters(text):
    """Names over 32 characters or with control characters raise ProtocolError."""
    with pytest.raises(protocol.ProtocolError):
        protocol.name(text)


def test_since_parses_ids_and_refuses_the_rest():
    """since is a decimal id; anything else is refused."""
    assert protocol.since(None) is None and protocol.since("") is None
    assert protocol.since("1764128000123001") == 1764128000123001
    for bad in ("-1", "1.5", "abc", "١٢", "9" * 19):
        with pytest.raises(protocol.ProtocolError):
            protocol.since(bad)


def test_chat_event_has_every_field():
    """A chat event carries state 2, the text, id as a string, room, name and ts."""
    event = json.loads(protocol.chat(42, "lobby", "Ada", 'say "hi" \\ 心', 1700000000000))
    assert event == {
        "state": 2, "message": 'say "hi" \\ 心', "id": "42", "room": "lobby", "name": "Ada", "ts": 1700000000000,
    }


def test_heartbeat_is_the_seed_frame():
    """The heartbeat is byte for byte what the original example sent."""
    assert json.loads(protocol.HEARTBEAT) == {"state": 1, "message": "心跳"}


def test_presence_and_notice_events():
    """Presence events carry event, name, online; welcome adds you and users; notices a code."""
    welcome = json.loads(protocol.presence("welcome", "r", "me", 2, ["me", "you"]))
    assert welcome["state"] == 3 and welcome["you"] == "me" and welcome["users"] == ["me", "you"]
    joined = json.loads(protocol.presence("join", "r", "you", 2))
    assert (joined["event"], joined["name"], joined["online"]) == ("join", "you", 2)
    assert "users" not in joined
    gap = json.loads(protocol.gap("r", 7))
    assert (gap["event"], gap["missed"]) == ("gap", 7)
    notice = json.loads(protocol.notice("rate_limited", "slow down"))
    assert notice == {"state": 4, "code": "rate_limited", "message": "slow down"}


@given(st.text(), st.text(max_size=40), st.integers(min_value=0, max_value=2**62))
def test_any_text_and_name_make_valid_json(text, name, message_id):
    """Whatever the text and name, the chat event is valid JSON that keeps them exactly."""
    event = json.loads(protocol.chat(message_id, "lobby", name, text, 1))
    assert event["state"] == 2 and event["message"] == text and event["name"] == name


@given(st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()), st.one_of(st.none(), st.text()))
def test_validation_either_accepts_or_raises_protocol_error(room, name, since):
    """Arbitrary room, name and since values never raise anything but ProtocolError."""
    for check, value in ((protocol.room, room), (protocol.name, name), (protocol.since, since)):
        try:
            result = check(value)
        except protocol.ProtocolError:
            continue
        if check is protocol.since:
            assert result is None or result >= 0
        else:
            assert isinstance(result, str) and 1 <= len(result) <= 32


@given(st.text(), st.text(max_size=32), st.integers(0, 10**6))
def test_presence_events_are_valid_json_with_state_and_message(name, room, online):
    """Every presence, gap and notice event is JSON with an int state and a string message."""
    for payload in (
        protocol.presence("join", room, name, online),
        protocol.presence("welcome", room, name, online, [name]),
        protocol.gap(room, online),
        protocol.notice("code", name),
    ):
        event = json.loads(payload)
        assert isinstance(event["state"], int) and isinstance(event["message"], str)
