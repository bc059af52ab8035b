"""Replays and pages drawn from both the backend's recent window and the store's record.

The backend holds a room's last ``CHAT_HISTORY_SIZE`` messages (none after a
restart of the memory backend, or once Redis expired the room); the store
holds everything retention keeps, except what another process has not
committed yet, which is among the newest and so in the backend's window.
Their union is complete.  The hub asks its ``Replays`` for the replay of
a join; the mount calls ``page`` for the HTTP API.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..backends import Backend, Item, Replay, Unavailable
from .records import Revision, Stored

if TYPE_CHECKING:
    from .off import NoStore
    from .store import Store

log = logging.getLogger(__name__)

#: Above every id.
HIGHEST = 2**63 - 1

#: Seconds a room's remembered tail is trusted: retention may remove some of it meanwhile.
TAIL_TTL = 30.0
#: Rooms whose tails are remembered, the least recently joined forgotten first.
TAILS = 256
#: Longest a join waits for another join's read of the same room before reading itself.
READ_WAIT = 5.0


@dataclass
class Tail:
    """The store's newest messages of a room below an id (oldest first), and whether they are all it holds there."""

    below: int
    items: list[Item]
    whole: bool
    until: float
    #: The room's newest change when it was read: a later one may have changed one of its messages.
    changed: int = 0

    def older(self, before: int, limit: int, changed: int = 0) -> list[Item] | None:
        """Return the last limit messages below before, or None when this tail cannot tell."""
        if before > self.below or time.monotonic() >= self.until or changed != self.changed:
            return None
        items = self.items[: bisect.bisect_left(self.items, before, key=lambda item: item.id)]
        if len(items) < limit and not self.whole:
            return None
        return items[-limit:] if limit else []


class Replays:
    """Complete joins' replays from the store, reading it once per room while the backend's window is short.

    A join the backend gives fewer than ``limit`` messages asks the store for
    older ones, and in a room whose history the backend holds entirely (a new
    room, or any room after a restart of the memory backend) every join asks
    the same question: what the store holds below the backend's oldest
    message.  The answer changes only when retention removes messages, since
    ids grow and the store gains only newer ones (what another process has not
    committed yet is in the backend's window).  So each room's answer is kept,
    as a ``Tail``, for ``TAIL_TTL`` seconds, and a storm of joins into a room
    reads the store once, not once per joiner.  The lock guards the tails and
    the reads under way; the store is read outside it.
    """

    def __init__(self, store: Store | NoStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._tails: OrderedDict[str, Tail] = OrderedDict()
        #: Per room, the read of its tail under way, which the joins that miss meanwhile wait for.
        self._reading: dict[str, threading.Event] = {}

    def joined(self, room: str, replay: Replay, since: int | None, upto: int, limit: int, cap: int) -> Replay:
        """Complete a join's replay with what only the store still has, up to the join's position upto.

        Without since the client gets the last limit messages; with since, at
        most cap messages after it (the newest), and a gap event counting the
        rest, or of unknown size when retention removed some.  A store that
        cannot answer leaves the backend's replay as it is.
        """
        try:
            if since is None:
                have = replay.messages
                if len(have) >= limit:
                    return replay
                older = self.older(room, have[0].id if have else upto + 1, limit - len(have), replay.changed)
                return Replay(older + have, last=replay.last) if older else replay
            if not replay.gap:
                return replay
            return _resume(self.store, room, replay, since, upto, cap)
        except Unavailable as exc:
            log.warning("replaying %s from the backend alone: %s", room, exc)
            return replay

    def older(self, room: str, before: int, limit: int, changed: int = 0) -> list[Item]:
        """Return the store's last limit messages of room below before, oldest first, from its tail when it can tell."""
        waited = False
        while True:
            with self._lock:
                tail = self._tails.get(room)
                found = tail.older(before, limit, changed) if tail is not None else None
                if found is not None:
                    self._tails.move_to_end(room)
                    return found
                reading = self._reading.get(room)
                if reading is None or waited:
                    mine = threading.Event()
                    if reading is None:
                        self._reading[room] = mine
                    break
            # Another join is reading this room: its answer is likely this one's too.
            reading.wait(READ_WAIT)
            waited = True
        try:
            items = [row.item() for row in self.store.newest(room, limit, before=before)]
            with self._lock:
                self._tails[room] = Tail(before, items, len(items) < limit, time.monotonic() + TAIL_TTL, changed)
                self._tails.move_to_end(room)
                while len(self._tails) > TAILS:
                    self._tails.popitem(last=False)
            return items
        finally:
            with self._lock:
                if self._reading.get(room) is mine:
                    del self._reading[room]
            mine.set()



def _resume(store: Store | NoStore, room: str, replay: Replay, since: int, upto: int, cap: int) -> Replay:
    floor = store.floor(room)
    if floor is None:
        # The store knows nothing of the room: the backend's verdict stands.
        return replay
    stored = store.newest(room, cap, after=since, before=upto + 1) if cap else []
    # The changes after since go with the messages, in order (protocol v3 gets them; the hub drops them for v1, v2).
    changes = store.changes(room, since, upto + 1, cap) if cap else []
    found = union([*stored, *changes], replay.messages)
    messages = found[-cap:] if cap else []
    if since < floor:
        return Replay(messages, gap=True, missed=None, last=replay.last)
    if cap and len(stored) < cap and len(found) <= cap:
        # Every stored message after since is in messages: none was missed, and there is nothing to count.
        return Replay(messages, last=replay.last)
    missed = store.count(room, since, messages[0].id if messages else upto + 1)
    return Replay(messages, gap=missed > 0, missed=missed if missed else None, last=replay.last)


def page(
    store: Store | NoStore, backend: Backend, room: str, since: int | None, before: int | None, limit: int, size: int,
) -> tuple[list[Item], bool, Replay | None]:
    """Return a page of room for the API: its messages in id order, whether more lie beyond it, and any gap.

    With before: the last limit messages before it; with since: the first
    limit after it, and the changes among them (protocol v3's state 6); with
    neither: the last limit.  "Beyond" is older, or newer for since.
    """
    want = limit + 1
    if since is not None:
        replay = backend.replay(room, since, size)
        changes = store.changes(room, since, HIGHEST, size)
        items = union([*store.oldest(room, want, after=since), *changes], replay.messages)
        floor = store.floor(room)
        gap = replay if floor is None else Replay(gap=since < floor)
        # The limit counts messages: the changes among them come too, up to the first message beyond the page,
        # and the page ends after the last change read when more may follow it, so that none is skipped.
        messages = [item.id for item in items if item.target is None]
        ends = [messages[limit]] if len(messages) > limit else []
        if size and len(changes) >= size:
            ends.append(changes[-1].id + 1)
        if ends:
            return [item for item in items if item.id < min(ends)], True, gap
        return items, False, gap
    stored = store.newest(room, want, before=before)
    if len(stored) >= want and before is not None:
        # Far enough back that whatever the backend's window holds is in the store too.
        recent: list[Item] = []
    else:
        window = backend.replay(room, None, want if before is None else size).messages
        recent = [item for item in window if before is None or item.id < before]
    items = union(stored, recent)[-want:]
    return items[-limit:] if limit else [], len(items) > limit, None


def fit(items: list[Item], budget: int, newest: bool) -> tuple[list[Item], bool]:
    """Return the newest (or oldest) items whose payloads fit in budget (one at least), and whether some were cut."""
    order = reversed(range(len(items))) if newest else range(len(items))
    total = kept = 0
    for index in order:
        total += len(items[index].payload)
        if total > budget and kept:
            break
        kept += 1
    if kept == len(items):
        return items, False
    return (items[len(items) - kept:] if newest else items[:kept]), True


def union(stored: list[Stored | Revision], recent: list[Item]) -> list[Item]:
    """Return the messages (and changes) of both lists once each, in id order."""
    items = {item.id: item for item in recent}
    for row in stored:
        items.setdefault(row.id, row.item())
    return [items[key] for key in sorted(items)]
