"""The in-process backend: history and presence in dictionaries under one lock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Any

from .. import protocol
from . import Deliver, Item, Replay, resume


class MemoryBackend:
    """Keep rooms in this process; everything is lost when it stops."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._size = settings["HISTORY_SIZE"]
        self._expiry = settings["ROOM_EXPIRY"]
        self._lock = threading.Lock()
        self._history: dict[str, deque[Item]] = {}
        self._last: dict[str, int] = {}
        self._epochs: dict[str, int] = {}
        #: When each known room was last used, oldest first.
        self._used: OrderedDict[str, float] = OrderedDict()
        self._members: dict[str, dict[str, str]] = {}
        self._newest_epoch = 0
        self._deliver: Deliver | None = None

    def _epoch_locked(self) -> int:
        # Ids start from milliseconds since the epoch, times 1000, whenever a
        # room (re)starts: they keep growing across restarts and expiries, so a
        # client that resumes with an older id is told it missed messages
        # instead of getting stale matches.  Never lower than one given before.
        self._newest_epoch = max(self._newest_epoch, time.time_ns() // 1_000_000 * 1000)
        return self._newest_epoch

    def _use_locked(self, room: str) -> None:
        """Mark room as used now, and forget the rooms empty and silent for longer than the expiry."""
        now = time.monotonic()
        used = self._used
        used[room] = now
        used.move_to_end(room)
        while used:
            oldest, since = next(iter(used.items()))
            if now - since < self._expiry:
                return
            if oldest in self._members:
                used[oldest] = now
                used.move_to_end(oldest)
                continue
            del used[oldest]
            self._history.pop(oldest, None)
            self._last.pop(oldest, None)
            self._epochs.pop(oldest, None)

    def start(self, deliver: Deliver) -> None:
        """Subscribe this process to every room."""
        with self._lock:
            self._deliver = deliver

    def publish(self, room: str, name: str, text: str, user: str | None = None) -> int:
        """Store a chat message, fan it out, and return its id."""
        ts = time.time_ns() // 1_000_000
        with self._lock:
            self._use_locked(room)
            if room not in self._last:
                self._last[room] = self._epochs[room] = self._epoch_locked()
            message_id = self._last[room] + 1
            self._last[room] = message_id
            item = Item(message_id, protocol.chat(message_id, room, name, text, ts, user))
            if self._size:
                history = self._history.get(room)
                if history is None:
                    history = self._history[room] = deque(maxlen=self._size)
                history.append(item)
            # Delivering under the lock keeps deliveries in id order; deliver
            # only enqueues, so no I/O happens here.
            if self._deliver is not None:
                self._deliver(room, [item])
        return message_id

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""
        with self._lock:
            history = list(self._history.get(room, ()))
            last = self._last.get(room)
            epoch = self._epochs.get(room)
            if last is None or epoch is None:
                last = epoch = self._epoch_locked()
        if since is None:
            return Replay(history[-limit:] if limit else [], last=last)
        oldest = history[0].id if history else last + 1
        return resume(history, since, last, epoch, oldest)

    def join(self, room: str, member: str, name: str) -> int:
        """Add a member to the room's presence, fan out the join, and return the online count."""
        with self._lock:
            self._use_locked(room)
            members = self._members.setdefault(room, {})
            members[member] = name
            return self._announce_locked(room, "join", name, len(members), member)

    def leave(self, room: str, member: str) -> int:
        """Remove a member from the room's presence, fan out the leave, and return the online count."""
        with self._lock:
            members = self._members.get(room, {})
            name = members.pop(member, None)
            online = len(members)
            if not members:
                self._members.pop(room, None)
            self._use_locked(room)
            if name is None:
                return online
            return self._announce_locked(room, "leave", name, online)

    def _announce_locked(self, room: str, event: str, name: str, online: int, joiner: str | None = None) -> int:
        if self._deliver is not None:
            self._deliver(room, [Item(None, protocol.presence(event, room, name, online), joiner)])
        return online

    def users(self, room: str) -> list[str]:
        """Return the names of the members online in the room."""
        with self._lock:
            return sorted(self._members.get(room, {}).values())

    def watch(self, room: str) -> None:
        """Do nothing: this process sees every room."""

    def unwatch(self, room: str) -> None:
        """Do nothing: this process sees every room."""

    def healthy(self) -> bool:
        """Tell that memory is always there."""
        return True

    def close(self) -> None:
        """Stop delivering."""
        with self._lock:
            self._deliver = None
