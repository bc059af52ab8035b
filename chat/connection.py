"""One WebSocket: a bounded outbox, and the read, heartbeat and ping loop of its own thread."""

from __future__ import annotations

import logging
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wsproto import ConnectionState
from wsproto.connection import Connection as Protocol
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from . import protocol, wire

if TYPE_CHECKING:
    from .hub import Batch, Hub

log = logging.getLogger(__name__)

UNSUPPORTED, ABNORMAL = 1003, 1006
POLICY, TOO_BIG, INTERNAL, TRY_AGAIN = 1008, 1009, 1011, 1013
#: How long a closing connection waits for the client's close frame.
CLOSE_WAIT = 2.0
#: Most frames handed to one sendmsg call (Linux's IOV_MAX is 1024).
IOV_MAX = 512
RECEIVE_BYTES = 65536
COMPRESSED_RECEIVE_BYTES = 1024


class Connection:
    """Deliver frames to one client in order, and serve what it sends.

    Once the connection has joined, every write on the socket goes through
    ``lock``: the fan-out thread writes ready frames without blocking, and what
    the socket cannot take waits in the outbox until the fan-out thread sees the
    socket writable again.  While it joins (``held``), the connection's own
    thread is the only writer: it sends the replay, and live events wait.  The
    connection's own thread reads, keeps the heartbeat and the protocol ping.
    """

    __slots__ = (
        "sock", "native", "fd", "ws", "hub", "room", "name", "remote", "member", "started",
        "compress", "lock", "outbox", "queued", "head_partial", "held", "pending", "floor",
        "close_code", "close_reason", "close_deadline", "finished", "watched", "watch_requested",
        "skip", "watching", "present", "released", "_settings", "_limit", "_max_bytes",
        "_fragments", "_fragment_bytes", "_receive_size", "_rate", "_burst", "_tokens", "_refilled",
        "_drops", "_warned",
    )

    def __init__(
        self,
        sock: socket.socket,
        ws: Protocol,
        hub: Hub,
        *,
        room: str,
        name: str,
        remote: str,
        settings: dict[str, Any],
    ) -> None:
        self.sock = sock
        self.native = wire.native(sock)
        self.fd = sock.fileno()
        self.ws = ws
        self.hub = hub
        self.room = room
        self.name = name
        self.remote = remote
        self.member = secrets.token_hex(8)
        self.started = time.monotonic()
        self.compress = wire.compressed(ws)
        self.lock = threading.Lock()
        self.outbox: list[bytes] = []
        self.queued = 0
        self.head_partial = False
        self.held = True
        self.pending: list[Batch] = []
        self.floor = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_deadline = 0.0
        self.finished = False
        self.watched = False
        self.watch_requested = False
        self.skip: bytes | None = None
        self.watching = False
        self.present = False
        self.released: threading.Event | None = None
        self._settings = settings
        self._limit = settings["OUTBOX_LIMIT"]
        self._max_bytes = settings["MAX_MESSAGE_BYTES"]
        self._fragments: list[str] | None = None
        # A compressed read can inflate a thousandfold before its size is
        # checked, so compressed connections read in small steps.
        self._receive_size = COMPRESSED_RECEIVE_BYTES if self.compress else RECEIVE_BYTES
        self._fragment_bytes = 0
        rate = settings["RATE_LIMIT"]
        self._rate, self._burst = rate if rate else (0.0, 0.0)
        self._tokens = self._burst
        self._refilled = self.started
        self._drops: deque[float] | None = None
        self._warned = False

    # Writing, from any thread.

    def deliver(self, batch: Batch) -> bool:
        """Write a batch of events; return True when a backlog starts."""
        with self.lock:
            if self.close_code is not None or self.finished:
                return False
            if self.held:
                self.pending.append(batch)
                self.queued += len(batch.frame)
                if self.queued > self._limit:
                    return self._overflow_locked()
                return False
            data = self._render_locked(batch)
            return bool(data) and self._write_locked(data)

    def send(self, payload: bytes) -> None:
        """Write one event to this client alone."""
        self._write(payload, framed=False)

    def _write(self, data: bytes, framed: bool) -> None:
        with self.lock:
            if self.close_code is not None or self.finished:
                return
            started = self._write_locked(data if framed else self._frame_locked(data))
        if started:
            self.hub.watch_backlog(self)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after what is already queued, and stop taking events."""
        with self.lock:
            if self.close_code is not None or self.finished:
                return
            started = self._close_locked(code, reason, CLOSE_WAIT)
        if started:
            self.hub.watch_backlog(self)

    def _close_locked(self, code: int, reason: str, wait: float) -> bool:
        self.close_code, self.close_reason = code, reason
        self.close_deadline = time.monotonic() + wait
        self.pending.clear()
        frame = wire.close_frame(code, reason)
        if self.held:
            # The joining thread is writing the replay: it sends this frame when done.
            self.outbox.append(frame)
            return False
        return self._write_locked(frame, force=True)

    def flush(self) -> bool:
        """Write what the outbox holds without blocking; return True while some is left."""
        with self.lock:
            if self.finished:
                return False
            self._flush_locked()
            return bool(self.outbox)

    def _write_locked(self, data: bytes, force: bool = False) -> bool:
        if self.outbox:
            self.outbox.append(data)
            self.queued += len(data)
            if self.queued > self._limit and not force:
                return self._overflow_locked()
            return False
        sent = self._send_nowait(data)
        if sent is None:
            self._broken_locked()
            return False
        if sent == len(data):
            return False
        self.outbox.append(data[sent:])
        self.queued = len(data) - sent
        self.head_partial = sent > 0
        self.watch_requested = True
        return True

    def _send_nowait(self, data: bytes | memoryview) -> int | None:
        """Write what the socket takes now; return how much, or None if the connection broke."""
        try:
            return self.native.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError:
            return None

    def _flush_locked(self) -> None:
        outbox = self.outbox
        while outbox:
            try:
                sent = self.native.sendmsg(outbox[:IOV_MAX], (), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                self._broken_locked()
                return
            self.queued -= sent
            done = 0
            while done < len(outbox) and sent >= len(outbox[done]):
                sent -= len(outbox[done])
                done += 1
            del outbox[:done]
            self.head_partial = sent > 0
            if sent:
                outbox[0] = outbox[0][sent:]
                return

    def _overflow_locked(self) -> bool:
        """Give up on a client that cannot keep up: drop what waits for it and close it with 1013."""
        self.hub.stats.count("slow_closes")
        # Only the rest of a frame already partly sent must still go before the close frame.
        head = self.outbox[:1] if self.head_partial else []
        self.outbox[:] = head
        self.queued = sum(map(len, head))
        # What the kernel already holds goes out before the close frame, so a
        # client that is slow rather than gone gets a while to read up to it.
        wait = max(CLOSE_WAIT, self._settings["PING_TIMEOUT"])
        return self._close_locked(TRY_AGAIN, f"client too slow: over {self._limit} bytes waiting", wait)

    def _broken_locked(self) -> None:
        self.outbox.clear()
        self.pending.clear()
        self.queued = 0
        if self.close_code is None:
            self.close_code, self.close_reason = ABNORMAL, "connection lost"
        self.close_deadline = time.monotonic()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _frame_locked(self, payload: bytes) -> bytes:
        if self.compress:
            if self.ws.state is not ConnectionState.OPEN:
                return b""
            return self.ws.send(TextMessage(data=payload.decode()))
        return wire.text_frame(payload)

    def _render_locked(self, batch: Batch) -> bytes:
        """Return the bytes of batch this client is owed, and move the floor past it."""
        seen = (batch.first_id is not None and batch.first_id <= self.floor) or (
            batch.presence and self.skip is not None
        )
        if seen:
            data = self._unseen_locked(batch)
        elif self.compress:
            data = b"".join(self._frame_locked(payload) for _, payload in batch.items)
        else:
            data = batch.frame
        if batch.last_id is not None:
            self.floor = max(self.floor, batch.last_id)
        return data

    def _unseen_locked(self, batch: Batch) -> bytes:
        """Encode the events of batch that were not replayed, less this client's own join."""
        frames = []
        for message_id, payload in batch.items:
            if message_id is None:
                if payload == self.skip:
                    self.skip = None
                    continue
            elif message_id <= self.floor:
                continue
            frames.append(self._frame_locked(payload))
        return b"".join(frames)

    # Joining: the connection's thread writes the replay while live events wait.

    def replay(self, payloads: Iterable[bytes], floor: int) -> bool:
        """Write the welcome and history, then what arrived meanwhile; False if the client is gone."""
        with self.lock:
            data = b"".join(self._frame_locked(p) for p in payloads)
            self.floor = max(self.floor, floor)
        if not self._send_all(data):
            return False
        while True:
            with self.lock:
                if self.close_code is not None:
                    self.held = False
                    last = b"".join(self.outbox)
                    self.outbox.clear()
                    self.queued = 0
                    break
                batches, self.pending = self.pending, []
                if not batches:
                    self.held = False
                    self.queued = 0
                    return True
                data = b"".join([self._render_locked(batch) for batch in batches])
                self.queued -= sum(len(batch.frame) for batch in batches)
            if not self._send_all(data):
                return False
        if last:
            self._send_all(last)
        return False

    def _send_all(self, data: bytes) -> bool:
        """Write data from this connection's thread, waiting at most a ping timeout."""
        view = memoryview(data)
        deadline = time.monotonic() + self._settings["PING_TIMEOUT"]
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while view:
            sent = self._send_nowait(view)
            if sent is None:
                with self.lock:
                    self._broken_locked()
                return False
            view = view[sent:]
            if view:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close(TRY_AGAIN, "client too slow")
                    return False
                poller.poll(left * 1000)
        return True

    # Reading, on the connection's own thread.

    def serve(self) -> None:
        """Read and answer the client until the connection ends."""
        settings = self._settings
        heartbeat = settings["HEARTBEAT_INTERVAL"]
        ping_every, ping_timeout = settings["PING_INTERVAL"], settings["PING_TIMEOUT"]
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        now = time.monotonic()
        next_beat, next_ping, pong_due = now + heartbeat, now + ping_every, 0.0
        while True:
            if self.close_code is not None:
                wake = self.close_deadline
            else:
                wake = min(next_beat, next_ping, pong_due or next_ping)
            timeout = max(0.0, wake - time.monotonic())
            if poller.poll(timeout * 1000):
                try:
                    data = self.sock.recv(self._receive_size)
                except OSError:
                    data = b""
                if not data:
                    self._lost()
                    return
                pong_due = 0.0
                if not self._receive(data):
                    return
            now = time.monotonic()
            if self.close_code is not None:
                if now >= self.close_deadline:
                    return
                continue
            if pong_due and now >= pong_due:
                log.info("no pong from %s in %s s", self.remote, ping_timeout)
                self.close(INTERNAL, "ping timeout")
                return
            if now >= next_beat:
                self.send(protocol.HEARTBEAT)
                next_beat = now + heartbeat
            if now >= next_ping:
                self._write(wire.PING, framed=True)
                next_ping = now + ping_every
                pong_due = pong_due or now + ping_timeout

    def _lost(self) -> None:
        with self.lock:
            if self.close_code is None:
                self.close_code, self.close_reason = ABNORMAL, "connection lost"

    def _receive(self, data: bytes) -> bool:
        """Feed received bytes to wsproto; return False once the connection is over."""
        try:
            if self.compress:
                with self.lock:
                    self.ws.receive_data(data)
                    events = list(self.ws.events())
            else:
                self.ws.receive_data(data)
                events = self.ws.events()
            for event in events:
                if not self._handle(event):
                    return False
        except LocalProtocolError:
            self._lost()
            return False
        return True

    def _handle(self, event: object) -> bool:
        if isinstance(event, TextMessage):
            if self.close_code is None:
                self._text(event)
        elif isinstance(event, BytesMessage):
            self.close(UNSUPPORTED, "binary frames are not accepted")
        elif isinstance(event, Ping):
            with self.lock:
                pong = self.ws.send(event.response()) if self.close_code is None else b""
            if pong:
                self._write(pong, framed=True)
        elif isinstance(event, CloseConnection):
            return self._closed_by_peer(event)
        return True

    def _closed_by_peer(self, event: CloseConnection) -> bool:
        if self.close_code is not None:
            return False
        if self.ws.state is ConnectionState.REMOTE_CLOSING:
            with self.lock:
                reply = self.ws.send(event.response())
            self._write(reply, framed=True)
            with self.lock:
                self.close_code, self.close_reason = event.code, event.reason or ""
            return False
        # wsproto reports a frame it could not parse as a close with the code to send.
        self.close(event.code, event.reason or "protocol error")
        return False

    def _text(self, event: TextMessage) -> None:
        self._fragment_bytes += len(event.data.encode()) if not event.data.isascii() else len(event.data)
        if self._fragment_bytes > self._max_bytes:
            self._fragments = None
            self.close(TOO_BIG, f"message over {self._max_bytes} bytes")
            return
        if not event.message_finished:
            if self._fragments is None:
                self._fragments = []
            self._fragments.append(event.data)
            return
        if self._fragments is not None:
            self._fragments.append(event.data)
            text = "".join(self._fragments)
            self._fragments = None
        else:
            text = event.data
        self._fragment_bytes = 0
        if protocol.is_blank(text):
            return
        if self._rate and not self._take_token():
            return
        self.hub.publish(self, text)

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._warned = False
            return True
        self.hub.stats.count("rate_limited")
        drops = self._drops
        if drops is None:
            drops = self._drops = deque()
        drops.append(now)
        while drops and drops[0] < now - 10:
            drops.popleft()
        if len(drops) > self._rate * 50:
            self.close(POLICY, "too many messages")
        elif not self._warned:
            self._warned = True
            self.send(protocol.notice("rate_limited", f"slow down: at most {self._rate:g} messages per second"))
        return False
