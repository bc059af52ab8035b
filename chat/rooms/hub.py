"""The rooms of this process: admission, membership and presence, each step undone on failure.

The hub's lock guards the connection counts and the set of connections
the backend has entered; the ``Roster`` owns who is in which room.  No I/O
happens under either lock.  Live events reach the
connections through the ``Fanout`` it owns, which reads the rooms through
``members``; messages go out through its ``Sender`` (``sending``), and
joins replay from the store what the backend no longer holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..backends import Backend, Unavailable
from ..fanout.thread import Fanout
from ..socket.budget import Buckets
from ..socket.connection import POLICY, TRY_AGAIN, Connection
from ..store import NoStore, Store, history
from . import replay as replays
from .changes import KINDS, Changer
from .conversations import Conversations
from .offline import Gone
from .roster import CLOSING, Roster
from .sending import Moderate, Sender
from .signouts import SignOuts

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger(__name__)

GOING_AWAY = 1001
#: Room kept in a replay's budget for its gap event and the frames' heads.
GAP_BYTES = 1024


class Hub:
    """Own the rooms of this process and the fan-out thread that feeds them."""

    def __init__(
        self, backend: Backend, settings: dict[str, Any], stats: Metrics, moderate: Moderate | None = None,
        store: Store | NoStore | None = None, gone: Gone | None = None, wants_gone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.backend = backend
        self.store = store if store is not None else NoStore()
        self.settings = settings
        self.stats = stats
        self._sender = Sender(backend, self.store, stats, moderate)
        self._changer = Changer(backend, self.store, moderate)
        self._replays = history.Replays(self.store)
        self._shared = replays.Shared()
        #: Bytes a join's replay may take: it counts against the outbox limit, so a reader is never closed by it.
        self._replay_bytes = min(settings["REPLAY_BYTES"], settings["OUTBOX_LIMIT"])
        self.limit: int = settings["MAX_CONNECTIONS"] or 1000
        rate, handshakes = settings["RATE_LIMIT"], settings["HANDSHAKE_RATE"]
        #: Each sender's messages (a user's, a guest address's), across its connections and reconnects.
        self.messages = Buckets(*rate) if rate else None
        self._handshakes = Buckets(*handshakes) if handshakes else None
        self.signouts = SignOuts(settings["SIGNOUT_TTL"])
        self._roster = Roster(stats)
        self.fanout = Fanout(
            self._roster.members, self._roster.occupied, stats,
            settings["PRESENCE_INTERVAL"], settings["PRESENCE_LIST_LIMIT"],
        )
        # Made once and shared: a bound method per connection would cost 64 bytes each.
        self._callbacks = (self.fanout.watch, self.fanout.closing, stats.count)
        self.conversations = Conversations(backend, self.store, settings, self._roster.members, gone, wants_gone)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        #: The connections the backend has entered into their room's presence: leaving must exit them.
        self._entered: set[Connection] = set()
        self._open = 0
        self._per_address: dict[str, int] = {}
        self._closing = False
        self._started = False

    # Admission, from connection threads.

    def handshake(self, address: str) -> tuple[int, str] | None:
        """Count a handshake from address, or return the close code and reason to refuse one too many."""
        if self._handshakes is None or self._handshakes.take(address)[0]:
            return None
        return TRY_AGAIN, "too many connections from your address, try again later"

    def admit(self, address: str) -> tuple[int, str] | None:
        """Reserve a place for a new connection, or return the close code and reason to refuse it."""
        with self._lock:
            if self._closing:
                return GOING_AWAY, "server is shutting down"
            if self._open >= self.limit:
                return 1013, "server is full, try again later"
            if self._per_address.get(address, 0) >= self.settings["MAX_CONNECTIONS_PER_IP"]:
                return 1008, "too many connections from your address"
            self._open += 1
            self._per_address[address] = self._per_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """Give back the place that admit() reserved."""
        with self._lock:
            self._open -= 1
            # Only shutdown waits for this: a notify is not free (under gevent it yields while holding the lock).
            if self._closing:
                self._changed.notify_all()
            left = self._per_address.get(address, 1) - 1
            if left:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    def connection(self, sock: Any, ws: Any, **details: Any) -> Connection:
        """Build a connection that reports its backlog and its close to this hub's fan-out."""
        watch, closing, count = self._callbacks
        return Connection(
            sock, ws, settings=self.settings, on_backlog=watch, on_closing=closing, count=count, **details
        )

    # Membership.

    def join(self, conn: Connection, since: int | None) -> bool:
        """Add conn to its room, then send it the welcome and history; False if it is gone."""
        self.start()
        room = conn.room
        if self._refused(conn):
            return False
        refused = self._roster.add(conn)
        if refused == CLOSING:
            conn.close(GOING_AWAY, "server is shutting down")
            return False
        if refused is not None:
            conn.close(POLICY, "that name belongs to a signed-in user here: choose another")
            return False
        try:
            # Again once in the room: a removal or ban told meanwhile either shows here or finds conn in the room.
            if self._refused(conn):
                self._roster.remove(conn)
                return False
            entry = self.backend.enter(room, conn.member, conn.name, since, self.settings["HISTORY_REPLAY"], conn.user)
        except BaseException:
            self._roster.remove(conn)
            raise
        with self._lock:
            self._entered.add(conn)
        self.conversations.joined(conn)
        limit, cap = self.settings["HISTORY_REPLAY"], self.settings["HISTORY_SIZE"]
        replay = self._replays.joined(room, entry.replay, since, entry.position[0], limit, cap)
        welcome = protocol.presence("welcome", room, conn.name, entry.online, entry.users)
        welcome = self.conversations.welcome(conn, welcome, entry.replay.last)
        # Cut from what the client gets, so that a v1 or v2 budget is not spent on changes it never gets.
        replay = replays.cut(replays.visible(replay, conn.version), self._replay_bytes - len(welcome) - GAP_BYTES)
        payloads = [welcome]
        if replay.gap:
            payloads.append(protocol.gap(room, replay.missed))
        payloads.extend(self._shared.items(room, replay.messages))
        return conn.replay(payloads, entry.position)

    def _refused(self, conn: Connection) -> bool:
        """Close conn if its room is not open to it (private, banned); tell whether it was."""
        refusal = self.conversations.refusal(conn)
        if refusal is not None:
            conn.close(*refusal)
        return refusal is not None

    def leave(self, conn: Connection) -> None:
        """Stop delivering to conn, send what it is still owed, let go of its socket, and tell the others."""
        self._roster.remove(conn)
        conn.finish()
        self.fanout.release(conn)
        with self._lock:
            entered = conn in self._entered
            self._entered.discard(conn)
        if entered:
            self.conversations.left(conn)
            try:
                self.backend.exit(conn.room, conn.member)
            except Unavailable:
                log.warning("backend unavailable: %r of %r leaves no trace in %s", conn.name, conn.remote, conn.room)

    def publish(self, conn: Connection, text: str, cid: str | None = None, reply_to: int | None = None) -> None:
        """Send a chat message from conn to its room (a v2 one once: cid names it), and store it; not if muted."""
        try:
            muted = self.conversations.muted(conn)
        except Unavailable as exc:
            conn.send(protocol.notice("unavailable", exc.notice, cid))
            return
        if muted:
            conn.send(protocol.notice("muted", "you are muted in this room: your message was not sent", cid))
            return
        self._sender.send(conn, text, cid, reply_to)

    def act(self, conn: Connection, frame: protocol.Frame) -> None:
        """Answer a v3 frame that is not a plain chat message (a reply, read, typing, edit, delete, react)."""
        if frame.type == "message":
            self.publish(conn, frame.text, frame.cid, frame.reply_to)
        elif frame.type in KINDS:
            self._changer.frame(conn, frame)
        else:
            self.conversations.act(conn, frame)

    def sign_out(self, user_id: str) -> int:
        """Close user_id's connections here and in every process sharing the backend; return how many were here."""
        closed = self.disconnect_local(user_id)
        self.backend.sign_out(user_id)
        return closed

    def disconnect_local(self, user_id: str) -> int:
        """Close user_id's connections here with 1008 "signed out", and refuse its older tokens; return how many."""
        self.signouts.record(user_id)
        mine = [conn for conn in self.connections() if conn.user == user_id]
        for conn in mine:
            conn.close(POLICY, "signed out")
        return len(mine)

    def members(self, room: str) -> list[Connection]:
        """Return a snapshot of the connections in room."""
        return self._roster.members(room)

    def occupied(self, room: str) -> bool:
        """Tell whether any connection of this process is in room."""
        return self._roster.occupied(room)

    def connections(self) -> list[Connection]:
        """Return a snapshot of every connection in this process."""
        return self._roster.connections()

    def count(self) -> int:
        """Return how many connections this process holds."""
        with self._lock:
            return self._open

    # The threads.

    def start(self) -> None:
        """Start the fan-out thread, subscribe to the backend and open the store, once per process."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self.fanout.start()
            # Under the lock, so no connection joins before the backend delivers.
            self.backend.start(self.fanout.deliver, self.disconnect_local, self.conversations.control)
        try:
            self.store.start()
        except Unavailable as exc:
            log.warning("%s: it is tried again with the next message", exc)

    def shutdown(self, timeout: float) -> None:
        """Close every connection with 1001 after its outbox, wait for them, and stop the threads."""
        with self._lock:
            self._closing = True
        for conn in self._roster.close():
            conn.close(GOING_AWAY, "server is restarting")
        with self._changed:
            self._changed.wait_for(lambda: self._open == 0, timeout)
        self.stop()

    def stop(self) -> None:
        """Stop the fan-out thread and the backend, join them, and store what is queued."""
        self.fanout.stop()
        self.conversations.stop()
        self.backend.close()
        self.store.close()

    def running(self) -> bool:
        """Tell whether the fan-out thread is alive (or not started yet)."""
        return self.fanout.alive()
