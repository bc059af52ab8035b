"""The connection lifecycle: every allowed and every refused transition."""

from __future__ import annotations

import pytest

from chat.socket.lifecycle import ABNORMAL, Lifecycle, State, TransitionError


def at(state: State) -> Lifecycle:
    """Return a lifecycle that has reached state by allowed steps."""
    life = Lifecycle()
    if state is State.OPEN:
        life.open()
    elif state is State.CLOSING:
        life.close(1000, "bye", 1.0)
    elif state is State.DONE:
        life.lose()
    return life


def test_a_connection_starts_joining_and_live():
    """A new lifecycle is JOINING, may be written to, and has no close code."""
    life = Lifecycle()
    assert (life.state, life.live, life.code) == (State.JOINING, True, None)


@pytest.mark.parametrize("start", [State.JOINING, State.OPEN])
def test_close_records_code_reason_and_deadline_once(start):
    """Closing from JOINING or OPEN records the first code; a second close is refused and changes nothing."""
    life = at(start)
    assert life.close(1008, "policy", 5.0) is True
    assert (life.state, life.code, life.reason, life.live) == (State.CLOSING, 1008, "policy", False)
    deadline = life.deadline
    assert life.close(1011, "later", 60.0) is False
    assert (life.code, life.reason, life.deadline) == (1008, "policy", deadline)


def test_lose_ends_at_once_with_1006_unless_a_code_was_chosen():
    """A lost connection is DONE with 1006; one lost while closing keeps the code the server chose."""
    lost = at(State.OPEN)
    lost.lose()
    assert (lost.state, lost.code) == (State.DONE, ABNORMAL)
    closing = at(State.CLOSING)
    closing.lose()
    assert (closing.state, closing.code) == (State.DONE, 1000)


def test_end_and_lose_are_idempotent_once_done():
    """Ending a connection that is done already changes nothing."""
    life = at(State.CLOSING)
    life.end()
    life.end()
    life.lose()
    assert (life.state, life.code) == (State.DONE, 1000)


@pytest.mark.parametrize("start", [State.OPEN, State.CLOSING, State.DONE])
def test_open_is_refused_unless_joining(start):
    """Only a joining connection can open; anything else raises TransitionError."""
    life = at(start)
    with pytest.raises(TransitionError):
        life.open()
    assert life.state is start


@pytest.mark.parametrize("start", [State.CLOSING, State.DONE])
def test_close_of_a_closing_or_done_connection_is_refused(start):
    """A connection that is closing or done cannot start closing again."""
    life = at(start)
    assert life.close(1000, "", 1.0) is False
    assert life.state is start
