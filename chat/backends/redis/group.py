"""Group commit for publishing: the messages a room gets while its last group is on its way go out together.

Each publish joins its room's queue.  When no group of that room is on its
way, the publisher sends the head of the queue (at most ``MOST`` messages,
``MOST_BYTES`` of UTF-8 text) as one script call and, once Redis answered, hands
the room to the first message still queued, which sends the next group.  A
message to an idle room goes at once; a busy room costs one round trip, one
script and one channel message per group instead of per message, in every
process that reads the room.

``Groups`` owns the queues and every ``Slot``'s state, under its lock; the
publisher of a slot waits on the slot's event until it is answered or told
to lead.  A publisher stopped on the way (a greenlet killed, a timeout, an
interrupt) takes its slot back, and hands the room on if it held the lead
or had just been handed it, so the room never waits for a publisher that is
gone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .. import Published, Unavailable

#: Most messages, and most bytes of text (in UTF-8), one group carries.
MOST, MOST_BYTES = 100, 256 * 1024

#: name, text, ts, user, reply_to ("" for none)
Message = tuple[str, str, int, str, str]
Send = Callable[[str, list[Message]], list[int]]


class Step(Enum):
    """Where one message is: queued, sending its group, or answered."""

    QUEUED = "queued"
    LEADING = "leading"
    DONE = "done"


@dataclass(eq=False)
class Slot:
    """One message waiting for its id."""

    message: Message
    #: The bytes of the message's text in UTF-8.
    size: int
    step: Step = Step.QUEUED
    #: Made only for a slot that waits (one that leads at once never does).
    woken: threading.Event | None = None
    id: int | None = None
    error: Unavailable | None = None


class Groups:
    """Publish each room's messages in groups, one group of a room on its way at a time."""

    def __init__(self, send: Send, wait: float) -> None:
        self._send = send
        self._wait = wait
        self._lock = threading.Lock()
        #: A room is here while one of its groups is on its way, or a slot has been told to send the next.
        self._queues: dict[str, deque[Slot]] = {}

    def publish(self, room: str, message: Message) -> Published:
        """Send message with the room's group and return its id and ts; raise Unavailable if that failed."""
        text = message[1]
        # An ASCII text's length is its size, known without encoding it.
        slot = Slot(message, len(text) if text.isascii() else len(text.encode()))
        with self._lock:
            queue = self._queues.get(room)
            if queue is None:
                queue = self._queues[room] = deque()
                slot.step = Step.LEADING
            else:
                slot.woken = threading.Event()
            queue.append(slot)
            step = slot.step
        try:
            if step is Step.QUEUED:
                step = self._await(room, queue, slot)
            if step is Step.LEADING:
                self._lead(room, queue)
        except BaseException:
            # Killed, timed out or interrupted: whatever this slot held must not stop the room.
            self._withdraw(room, queue, slot)
            raise
        with self._lock:
            error, message_id = slot.error, slot.id
        if error is not None:
            raise error
        assert message_id is not None
        return Published(message_id, message[2])

    def _await(self, room: str, queue: deque[Slot], slot: Slot) -> Step:
        """Wait until slot is answered or told to lead; give up on it while it is still queued after the wait."""
        assert slot.woken is not None
        deadline = time.monotonic() + self._wait
        while True:
            slot.woken.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                if slot.step is not Step.QUEUED:
                    return slot.step
                if time.monotonic() < deadline:
                    continue
                if slot in queue:
                    queue.remove(slot)
                    slot.step = Step.DONE
                    slot.error = Unavailable("redis did not take the room's messages in time")
                    return slot.step
                # Taken into a group on its way: its sender answers it, within the command timeouts.
                deadline = time.monotonic() + self._wait

    def _withdraw(self, room: str, queue: deque[Slot], slot: Slot) -> None:
        """Take back a stopped publisher's slot, and hand the room on if the slot led or had just been told to."""
        with self._lock:
            if slot.step is Step.DONE or slot not in queue:
                # Answered, or taken into a group on its way, whose sender answers it.
                return
            queue.remove(slot)
            leading = slot.step is Step.LEADING
            slot.step = Step.DONE
            following = self._hand_locked(room, queue) if leading else None
        if following is not None and following.woken is not None:
            following.woken.set()

    def _lead(self, room: str, queue: deque[Slot]) -> None:
        """Send the head of room's queue as one group, answer its slots, and hand the room to the next."""
        with self._lock:
            group = [queue.popleft()]
            size = group[0].size
            while queue and len(group) < MOST and size + queue[0].size <= MOST_BYTES:
                size += queue[0].size
                group.append(queue.popleft())
        ids: list[int] | None = None
        failure: Unavailable | None = None
        try:
            ids = self._send(room, [slot.message for slot in group])
            if len(ids) != len(group):
                failure = Unavailable(f"redis answered {len(ids)} ids for {len(group)} messages", True)
        except Unavailable as exc:
            failure = exc
        finally:
            if ids is None and failure is None:
                failure = Unavailable("publishing was interrupted", True)
            self._answer(room, queue, group, ids, failure)

    def _hand_locked(self, room: str, queue: deque[Slot]) -> Slot | None:
        """Tell the first slot still queued to lead, and return it; forget the room when none is."""
        following = queue[0] if queue else None
        if following is None:
            del self._queues[room]
        else:
            following.step = Step.LEADING
        return following

    def _answer(
        self, room: str, queue: deque[Slot], group: list[Slot], ids: list[int] | None, failure: Unavailable | None
    ) -> None:
        with self._lock:
            for index, slot in enumerate(group):
                slot.step = Step.DONE
                if failure is None and ids is not None:
                    slot.id = ids[index]
                elif failure is not None:
                    # One exception per sender: each raises its own.
                    slot.error = failure if index == 0 else Unavailable(str(failure), failure.maybe_done)
            following = self._hand_locked(room, queue)
        for slot in [*group, following]:
            if slot is not None and slot.woken is not None:
                slot.woken.set()
