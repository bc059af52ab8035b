"""One WebSocket's writing side: its lifecycle, outbox and replay gate, under one lock.

Every write to the socket goes through ``lock``, from whichever thread makes
it: the fan-out thread (live batches, and flushing a backlog), the
connection's own thread (the replay, heartbeats, pings, pongs and close
replies) or another one closing it.  A ``Connection`` knows nothing of rooms
or of the fan-out: it reports a backlog through ``on_backlog`` and a close
through ``on_closing``, and the reading side lives in ``reader``.
"""

from __future__ import annotations

import secrets
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from wsproto.connection import Connection as Protocol
from wsproto.events import CloseConnection, Ping, TextMessage

from ..backends import Position
from . import wire
from .gate import Gate
from .lifecycle import Lifecycle, State
from .outbox import Outbox, Write

if TYPE_CHECKING:
    from .batch import Batch

UNSUPPORTED, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1003, 1008, 1009, 1011, 1013
#: How long a closing connection waits for the client's close frame.
CLOSE_WAIT = 2.0

Notify = Callable[["Connection"], None]
OPEN, JOINING, SENT = State.OPEN, State.JOINING, Write.SENT


class Connection:
    """Deliver frames to one client in order, without ever blocking the caller."""

    __slots__ = (
        "sock", "native", "fd", "ws", "room", "name", "user", "remote", "member", "scope", "started", "compress",
        "version", "lock", "life", "outbox", "gate", "_on_backlog", "_on_closing", "_count", "_slow_wait",
        "__weakref__",
    )

    def __init__(
        self,
        sock: socket.socket,
        ws: Protocol,
        *,
        room: str,
        name: str,
        remote: str,
        settings: dict[str, Any],
        on_backlog: Notify,
        on_closing: Notify,
        count: Callable[[str], None],
        user: str | None = None, version: int = 1, scope: str | None = None,
    ) -> None:
        self.sock = sock
        self.native = wire.native(sock)
        self.fd = sock.fileno()
        self.ws = ws
        self.room = room
        self.name = name
        #: The identified user's id, or None for a guest.
        self.user = user
        #: The protocol version the client asked for (2: batched presence, acknowledged sends).
        self.version = version
        self.remote = remote
        self.member = secrets.token_hex(8)
        #: Whose client ids this connection's are: its user's, a guest's key's, or (by default) its own.
        self.scope = scope or f"m:{self.member}"
        self.started = time.monotonic()
        self.compress = wire.compressed(ws)
        self.lock = threading.Lock()
        self.life = Lifecycle()
        self.outbox = Outbox(self.native, settings["OUTBOX_LIMIT"])
        self.gate = Gate()
        self._on_backlog = on_backlog
        self._on_closing = on_closing
        self._count = count
        # What the kernel already holds goes out before a slow client's close
        # frame, so one that is slow rather than gone gets a while to read up to it.
        self._slow_wait = max(CLOSE_WAIT, settings["PING_TIMEOUT"])

    @property
    def close_code(self) -> int | None:
        """Return the close code, once the connection is closing or done."""
        return self.life.code

    @property
    def close_reason(self) -> str:
        """Return the reason that goes with the close code."""
        return self.life.reason

    @property
    def deadline(self) -> float:
        """Return when a closing connection stops waiting for its client."""
        return self.life.deadline

    # Writing, from any thread.

    def deliver(self, batch: Batch) -> bool:
        """Write a batch of live events; return True when a backlog starts (the caller watches it)."""
        with self.lock:
            life = self.life
            state = life.state
            if state is OPEN:
                data = self.gate.render(batch, self.version, self._frame_locked if self.compress else None)
                verdict = self.outbox.write(data) if data else SENT
                if verdict is SENT:
                    return False
                started = self._written_locked(verdict)
            elif state is JOINING:
                self.gate.hold(batch, self.version)
                started = self.outbox.queued + self.gate.held > self.outbox.limit and self._overflow_locked()
            else:
                return False
            closing = life.state is not state  # only a close (overflow, broken socket) moves it on
        if closing:
            self._on_closing(self)
        return started

    def send(self, payload: bytes, frame: bytes | None = None) -> None:
        """Write one event to this client alone; with frame (payload encoded once for many), only once it is open."""
        with self.lock:
            if not self.life.live or (frame is not None and self.life.state is not OPEN):
                return
            started = self._write_locked(self._frame_locked(payload) if frame is None or self.compress else frame)
            closing = not self.life.live
        self._after(started, closing)

    def ping(self) -> None:
        """Write a protocol ping."""
        with self.lock:
            if not self.life.live:
                return
            started = self._write_locked(wire.PING)
            closing = not self.life.live
        self._after(started, closing)

    def pong(self, event: Ping) -> None:
        """Answer a client's ping."""
        with self.lock:
            if not self.life.live:
                return
            started = self._write_locked(self.ws.send(event.response()))
            closing = not self.life.live
        self._after(started, closing)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is already queued, and stop taking events."""
        with self.lock:
            if not self.life.close(code, reason, CLOSE_WAIT):
                return
            started = self._close_locked(wire.close_frame(code, reason))
        self._after(started, True)

    def closed_by_peer(self, event: CloseConnection) -> None:
        """Answer the client's close frame, unless it is the answer to ours."""
        with self.lock:
            if not self.life.live:
                return
            # The reply and the state change are one step: no data frame can follow the reply.
            reply = self.ws.send(event.response())
            self.life.close(event.code, event.reason or "", CLOSE_WAIT)
            started = self._close_locked(reply)
        self._after(started, True)

    def _after(self, started: bool, closing: bool) -> None:
        """Tell the fan-out, outside the lock, of a backlog to watch and a close deadline to keep."""
        if started:
            self._on_backlog(self)
        if closing:
            self._on_closing(self)

    def _close_locked(self, frame: bytes) -> bool:
        self.gate.clear()
        return self._write_locked(frame, limited=False)

    def flush(self) -> bool:
        """Write what the outbox holds without blocking; return True while some is left."""
        with self.lock:
            if self.life.state is State.DONE:
                return False
            verdict = self.outbox.flush()
            if verdict is Write.BROKEN:
                self._broken_locked()
                return False
            return verdict is Write.QUEUED

    def backlogged(self) -> bool:
        """Tell whether bytes wait for the socket."""
        with self.lock:
            return self.life.state is not State.DONE and not self.outbox.empty

    def expire(self) -> None:
        """Shut the socket of a connection still closing past its deadline, which wakes its reader."""
        with self.lock:
            if self.life.state is not State.CLOSING or time.monotonic() < self.life.deadline:
                return
            self.outbox.clear()
        _shutdown(self.sock)

    def _write_locked(self, data: bytes, limited: bool = True) -> bool:
        return self._written_locked(self.outbox.write(data, limited=limited))

    def _written_locked(self, verdict: Write) -> bool:
        if verdict is Write.STARTED:
            return True
        if verdict is Write.OVER:
            return self._overflow_locked()
        if verdict is Write.BROKEN:
            self._broken_locked()
        return False

    def _overflow_locked(self) -> bool:
        """Give up on a client that cannot keep up: drop what waits for it and close it with 1013."""
        self._count("slow_closes")
        self.outbox.trim()
        self.gate.clear()
        limit = self.outbox.limit
        if not self.life.close(TRY_AGAIN, f"client too slow: over {limit} bytes waiting", self._slow_wait):
            return False
        self._close_locked(wire.close_frame(TRY_AGAIN, self.life.reason))
        return not self.outbox.empty

    def _broken_locked(self) -> None:
        self.outbox.clear()
        self.gate.clear()
        self.life.lose()
        _shutdown(self.sock)

    def _frame_locked(self, payload: bytes) -> bytes:
        if self.compress:
            return self.ws.send(TextMessage(data=payload.decode()))
        return wire.text_frame(payload)

    # Joining and leaving, on the connection's own thread.

    def replay(self, payloads: Iterable[bytes], floor: Position) -> bool:
        """Write the welcome and history, then what arrived meanwhile, and open; False if closed."""
        with self.lock:
            if self.life.state is not State.JOINING:
                return False
            gate = self.gate
            gate.start(floor)
            if self.compress:
                parts = [self._frame_locked(payload) for payload in payloads]
            else:
                parts = [part for payload in payloads for part in (wire.text_head(len(payload)), payload)]
            started = self._written_locked(self.outbox.write_parts(parts))
            encode = self._frame_locked if self.compress else None
            for batch in gate.release():
                data = gate.render(batch, self.version, encode)
                if data and self.life.live:
                    started = self._write_locked(data) or started
            opened = self.life.state is State.JOINING
            if opened:
                self.life.open()
            closing = not self.life.live
        self._after(started, closing)
        return opened

    def finish(self) -> None:
        """Write what is still owed (a close frame behind a backlog) until the close deadline, then end."""
        poller: select.poll | None = None
        while True:
            with self.lock:
                if self.life.state is State.DONE or self.outbox.empty:
                    break
                verdict = self.outbox.flush()
                left = self.life.deadline - time.monotonic()
                if verdict is not Write.QUEUED or left <= 0 or self.life.live:
                    break
            if poller is None:
                poller = select.poll()
                poller.register(self.fd, select.POLLOUT)
            poller.poll(left * 1000)
        with self.lock:
            self.outbox.clear()
            self.gate.clear()
            self.life.end()

    def lose(self) -> None:
        """Record that the client went away without a close handshake."""
        with self.lock:
            if self.life.live:
                self.life.lose()


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
