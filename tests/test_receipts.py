"""Idempotency records: one answer per key, bounded in number and in age."""

from __future__ import annotations

import pytest

from chat.rooms.receipts import Conflict, Receipts


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """Return a clock the test moves by hand."""
    return Clock()


def test_a_finished_key_returns_its_answer_until_it_expires(clock):
    """A key answered once returns that answer for ttl seconds, then it is free again."""
    store = Receipts(ttl=60, clock=clock)
    assert store.begin("k", "asked") is None
    store.finish("k", {"id": "1"})
    clock.now += 59
    assert store.begin("k", "asked") == {"id": "1"}
    clock.now += 2
    assert store.begin("k", "asked") is None


def test_a_running_or_reused_key_is_a_conflict(clock):
    """A key still running is 409; the same key for another request is 422; a forgotten one runs again."""
    store = Receipts(ttl=60, clock=clock)
    store.begin("k", "asked")
    with pytest.raises(Conflict) as running:
        store.begin("k", "asked")
    assert running.value.status == 409
    with pytest.raises(Conflict) as reused:
        store.begin("k", "something else")
    assert reused.value.status == 422
    store.forget("k")
    assert store.begin("k", "asked") is None


def test_the_oldest_keys_go_first_past_the_size(clock):
    """Past size keys the oldest are forgotten, so memory stays bounded whatever clients send."""
    store = Receipts(ttl=60, size=3, clock=clock)
    for number in range(5):
        store.begin(number, "asked")
        store.finish(number, {"id": str(number)})
        clock.now += 1
    assert len(store) == 3
    assert store.begin(0, "asked") is None
    assert store.begin(4, "asked") == {"id": "4"}
