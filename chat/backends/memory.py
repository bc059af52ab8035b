"""The in-process backend: history and presence in dictionaries under one lock."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from itertools import islice
from typing import Any

from .. import protocol
from . import (
    Change,
    Changed,
    Control,
    Deliver,
    Entry,
    Item,
    Position,
    Presence,
    Published,
    Replay,
    SignOut,
    fold,
    resume,
)


class MemoryBackend:
    """Keep rooms in this process; everything is lost when it stops."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._size = settings["HISTORY_SIZE"]
        self._expiry = settings["ROOM_EXPIRY"]
        self._list_limit = int(settings.get("PRESENCE_LIST_LIMIT", 200))
        self._lock = threading.Lock()
        self._history: dict[str, deque[Item]] = {}
        self._last: dict[str, int] = {}
        self._epochs: dict[str, int] = {}
        #: Each room's position: its last chat id, and the presence events since.
        self._positions: dict[str, Position] = {}
        #: When each known room was last used, oldest first.
        self._used: OrderedDict[str, float] = OrderedDict()
        #: Per room: member -> (presence key, name), and presence key -> (connections, name).
        self._members: dict[str, dict[str, tuple[str, str]]] = {}
        self._online: dict[str, dict[str, list]] = {}
        #: Per room, which keys are its first list-limit keys online and their names, sorted; made again only
        #: when those keys change.
        self._names: dict[str, tuple[frozenset[str], protocol.Names]] = {}
        self._folds = fold.Folds(self._size)
        self._newest_epoch = 0
        self._deliver: Deliver | None = None
        self._on_control: Control | None = None
        #: Keys once() has seen, with when each may be seen again.
        self._once: dict[str, float] = {}

    def _epoch_locked(self) -> int:
        # Ids start from milliseconds since the epoch, times 1000, whenever a
        # room (re)starts: they keep growing across restarts and expiries, so a
        # client that resumes with an older id is told it missed messages
        # instead of getting stale matches.  Never lower than one given before.
        self._newest_epoch = max(self._newest_epoch, time.time_ns() // 1_000_000 * 1000)
        return self._newest_epoch

    def _counter_locked(self, room: str) -> int:
        last = self._last.get(room)
        if last is None:
            last = self._last[room] = self._epochs[room] = self._epoch_locked()
            self._positions[room] = (last, 0)
        return last

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
            for table in (self._history, self._last, self._epochs, self._positions):
                table.pop(oldest, None)
            self._folds.forget(oldest)

    def start(self, deliver: Deliver, on_signout: SignOut | None = None, on_control: Control | None = None) -> None:
        """Subscribe this process to every room and to control messages."""
        with self._lock:
            self._deliver = deliver
            self._on_control = on_control

    def sign_out(self, user: str) -> None:
        """Do nothing: there is no other process."""

    def tell(self, message: dict[str, Any]) -> None:
        """Hand message to this process's on_control: it is the only process."""
        on_control = self._on_control
        if on_control is not None:
            on_control(message)

    def once(self, key: str, seconds: float) -> bool:
        """Tell whether key is new (or its last call is over seconds ago)."""
        now = time.monotonic()
        with self._lock:
            if len(self._once) > 10_000:
                self._once = {known: until for known, until in self._once.items() if until > now}
            if self._once.get(key, 0.0) > now:
                return False
            self._once[key] = now + seconds
            return True

    def publish(
        self, room: str, name: str, text: str, user: str | None = None, reply_to: int | None = None,
    ) -> Published:
        """Store a chat message, fan it out, and return its id and ts."""
        ts = time.time_ns() // 1_000_000
        with self._lock:
            self._use_locked(room)
            message_id = self._next_locked(room)
            payload = fold.message(message_id, room, name, text, ts, user, reply_to)
            self._add_locked(room, Item(message_id, payload, None, (message_id, 0)))
        return Published(message_id, ts)

    def _next_locked(self, room: str) -> int:
        message_id = self._counter_locked(room) + 1
        self._last[room] = message_id
        self._positions[room] = (message_id, 0)
        return message_id

    def _add_locked(self, room: str, item: Item) -> None:
        if self._size:
            history = self._history.get(room)
            if history is None:
                history = self._history[room] = deque(maxlen=self._size)
            history.append(item)
        # Delivering under the lock keeps deliveries in order; deliver
        # only enqueues, so no I/O happens here.
        if self._deliver is not None:
            self._deliver(room, [item])

    def change(self, room: str, change: Change, seed: str | None = None) -> Changed:
        """Apply a change to a message (Refused, or Missing without seed when not held) and fan it out."""
        ts = time.time_ns() // 1_000_000
        with self._lock:
            self._use_locked(room)
            history = self._history.get(room, deque())
            state = self._folds.state(room, history, change.target, seed)
            on = fold.apply(state, change, ts)
            change_id = self._next_locked(room)
            folded = self._folds.keep(room, history, change, state, change_id)
            payload = fold.event(
                change.kind, room, change.target, change_id, change.user, change.name, ts, change.text, change.emoji,
                on,
            )
            self._add_locked(room, Item(change_id, payload, None, (change_id, 0), change.target))
        return Changed(change_id, ts, folded.decode(), on)

    def look(self, room: str, message_id: int) -> str | None:
        """Return a message's state if this backend holds it, else None."""
        with self._lock:
            return self._folds.look(room, self._history.get(room, deque()), message_id)

    def replay(self, room: str, since: int | None, limit: int) -> Replay:
        """Return the messages after since, or the last limit when since is None."""
        with self._lock:
            return self._replay_locked(room, since, limit)

    def _replay_locked(self, room: str, since: int | None, limit: int) -> Replay:
        window = self._history.get(room, ())
        last = self._last.get(room)
        epoch = self._epochs.get(room)
        if last is None or epoch is None:
            last = epoch = self._epoch_locked()
        changed = self._folds.changed.get(room, 0)
        if since is None:
            # From the newest end: a join costs the replay's length, not the history's.
            newest = list(islice((item for item in reversed(window) if item.target is None), limit))
            newest.reverse()
            return Replay(newest, last=last, changed=changed)
        history = list(window)
        oldest = history[0].id if history else last + 1
        replay = resume(history, since, last, epoch, oldest)
        replay.changed = changed
        return replay

    def enter(
        self, room: str, member: str, name: str, since: int | None, limit: int, user: str | None = None
    ) -> Entry:
        """Add a member to the room's presence, and return its replay, who is online and its position."""
        key = f"u:{user}" if user else f"m:{member}"
        with self._lock:
            self._use_locked(room)
            members = self._members.setdefault(room, {})
            online = self._online.setdefault(room, {})
            if member not in members:
                members[member] = (key, name)
                counted = online.get(key)
                if counted is None:
                    online[key] = [1, name]
                    if len(online) <= self._list_limit:
                        self._names.pop(room, None)
                    self._announce_locked(room, Presence("join", member, name, len(online)))
                else:
                    counted[0] += 1
            self._counter_locked(room)
            names = self._names_locked(room, online)
            return Entry(self._replay_locked(room, since, limit), len(online), names, self._positions[room])

    def _names_locked(self, room: str, online: dict[str, list]) -> protocol.Names:
        """Return the sorted names of the room's first list-limit keys online."""
        cached = self._names.get(room)
        if cached is not None:
            return cached[1]
        listed = list(islice(online.items(), self._list_limit))
        names = protocol.Names(sorted(entry[1] for _, entry in listed))
        if online:
            self._names[room] = (frozenset(key for key, _ in listed), names)
        return names

    def exit(self, room: str, member: str) -> int:
        """Remove a member from the room's presence (its leave is fanned out with its key's last connection)."""
        with self._lock:
            members = self._members.get(room, {})
            entry = members.pop(member, None)
            leaver = member
            if not members:
                self._members.pop(room, None)
            self._use_locked(room)
            online = self._online.get(room, {})
            counted = online.get(entry[0]) if entry is not None else None
            if entry is None or counted is None:
                return len(online)
            counted[0] -= 1
            if counted[0] <= 0:
                del online[entry[0]]
                cached = self._names.get(room)
                if cached is not None and entry[0] in cached[0]:
                    # Only a listed key's leave changes the list.
                    del self._names[room]
                if not online:
                    self._online.pop(room, None)
                self._announce_locked(room, Presence("leave", leaver, entry[1], len(online)))
            return len(online)

    def _announce_locked(self, room: str, said: Presence) -> None:
        last, count = self._positions.get(room) or (self._counter_locked(room), 0)
        at = self._positions[room] = (last, count + 1)
        if self._deliver is not None:
            payload = protocol.presence(said.event, room, said.name, said.online)
            self._deliver(room, [Item(None, payload, said, at)])

    def watch(self, room: str) -> None:
        """Do nothing: this process sees every room."""

    def unwatch(self, room: str) -> None:
        """Do nothing: this process sees every room."""

    def presence(self, room: str) -> tuple[int, list[str]]:
        """Return how many are online in the room, and (at most the list limit of) their names."""
        with self._lock:
            online = self._online.get(room, {})
            return len(online), list(self._names_locked(room, online))

    def users(self, room: str) -> list[str]:
        """Return (at most the list limit of) the names online in the room."""
        return self.presence(room)[1]

    def healthy(self) -> bool:
        """Tell that memory is always there."""
        return True

    def close(self) -> None:
        """Stop delivering."""
        with self._lock:
            self._deliver = None
            self._on_control = None
