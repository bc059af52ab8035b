"""The connection's own thread: frames in, the heartbeat and ping timers, the rate limit.

``serve`` runs on the thread the server gave the connection, after it has
joined, until the connection ends.  It is the only reader of the socket and
of wsproto's incoming state; everything it writes goes through the
``Connection``.  Chat texts go to ``on_text``, with the client id of a v2
frame that carries one; v3's other frames (read, typing, edit, ...) go to
``on_frame``; counts of rate-limit hits go to ``count``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from wsproto import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from .. import protocol
from ..text import scalar
from . import wire
from .budget import Bucket, Buckets
from .connection import INTERNAL, POLICY, TOO_BIG, UNSUPPORTED, Connection
from .lifecycle import State

log = logging.getLogger(__name__)

RECEIVE_BYTES = 65536
#: A compressed read can inflate a thousandfold before its size is checked,
#: so compressed connections read in small steps.
COMPRESSED_RECEIVE_BYTES = 1024
#: Most frames one message may come in.
MAX_FRAGMENTS = 256
#: Under gevent, frames handled between two yields to the other greenlets (a 64 KiB read can hold 10,000).
YIELD_EVERY = 64

#: on_text(conn, text) for a message as typed, on_text(conn, text, cid) for a v2 message with its client id.
Text = Callable[..., None]
#: on_frame(conn, frame) for a v3 frame that is not a plain chat message (a reply, read, typing, a change).
OnFrame = Callable[[Connection, protocol.Frame], None]


class Reader:
    """Read one connection's frames and keep its timers until it ends."""

    __slots__ = (
        "conn", "settings", "on_text", "on_frame", "count", "max_bytes", "size", "fragments", "fragment_bytes",
        "messages", "key", "frames", "warned", "pause",
    )

    def __init__(
        self, conn: Connection, settings: dict[str, Any], on_text: Text, count: Callable[[str], None],
        on_frame: OnFrame | None = None, messages: Buckets | None = None,
    ):
        self.conn = conn
        self.settings = settings
        self.on_text = on_text
        self.on_frame = on_frame
        self.count = count
        self.max_bytes = settings["MAX_MESSAGE_BYTES"]
        self.size = COMPRESSED_RECEIVE_BYTES if conn.compress else RECEIVE_BYTES
        self.fragments: list[str] | None = None
        self.fragment_bytes = 0
        #: The message buckets of every sender, shared by its connections: its user's, or a guest's address's.
        self.messages = messages
        self.key = f"u:{conn.user}" if conn.user is not None else f"a:{conn.remote}"
        # CHAT_RATE_LIMIT=off (benchmarks, trusted clients) turns the frame budget off too.
        frames = settings["FRAME_RATE"] if settings["RATE_LIMIT"] else None
        #: Every frame but a close costs one of these: empty ones, pings, pongs and fragments too.
        self.frames = Bucket(*frames) if frames else None
        self.warned = False
        self.pause = _pause(conn.sock)

    def serve(self) -> None:
        """Read and answer the client until the connection ends."""
        conn, settings = self.conn, self.settings
        life = conn.life
        heartbeat = settings["HEARTBEAT_INTERVAL"]
        ping_every, ping_timeout = settings["PING_INTERVAL"], settings["PING_TIMEOUT"]
        receive = wire.receiver(conn.sock, self.size).receive
        pause = self.pause
        now = time.monotonic()
        next_beat, next_ping, pong_due = now + heartbeat, now + ping_every, 0.0
        while True:
            wake = min(next_beat, next_ping, pong_due or next_ping) if life.live else life.deadline
            data = receive(max(0.0, wake - time.monotonic()))
            if data is not None:
                if not data:
                    conn.lose()
                    return
                pong_due = 0.0
                if not self._receive(data):
                    return
                if pause is not None:
                    # A gevent socket with data waiting never yields: let the other greenlets run between chunks.
                    pause()
            now = time.monotonic()
            if life.state is State.DONE:
                return
            if not life.live:
                if now >= life.deadline:
                    return
                continue
            if pong_due and now >= pong_due:
                log.info("no pong from %r in %s s", conn.remote, ping_timeout)
                conn.close(INTERNAL, "ping timeout")
                return
            if now >= next_beat:
                conn.send(protocol.HEARTBEAT)
                next_beat = now + heartbeat
            if now >= next_ping:
                conn.ping()
                next_ping = now + ping_every
                pong_due = pong_due or now + ping_timeout

    def _receive(self, data: bytes) -> bool:
        """Feed received bytes to wsproto; return False once reading is over."""
        conn = self.conn
        try:
            if conn.compress:
                # Compressed connections share wsproto's state with the writers.
                with conn.lock:
                    conn.ws.receive_data(data)
                    events = list(conn.ws.events())
            else:
                conn.ws.receive_data(data)
                events = conn.ws.events()
            pause = self.pause
            for index, event in enumerate(events, 1):
                if not self._handle(event):
                    return False
                if pause is not None and not index % YIELD_EVERY:
                    pause()
        except LocalProtocolError:
            conn.lose()
            return False
        return True

    def _handle(self, event: object) -> bool:
        conn = self.conn
        frames = self.frames
        if (
            frames is not None and not isinstance(event, CloseConnection)
            and getattr(event, "frame_finished", True) and not frames.take()
        ):
            self.count("frame_floods")
            conn.close(POLICY, "too many frames")
            return False
        if isinstance(event, TextMessage):
            if conn.life.live:
                self._text(event)
        elif isinstance(event, BytesMessage):
            conn.close(UNSUPPORTED, "binary frames are not accepted")
        elif isinstance(event, Ping):
            conn.pong(event)
        elif isinstance(event, CloseConnection):
            if conn.ws.state is ConnectionState.REMOTE_CLOSING:
                conn.closed_by_peer(event)
            else:
                # wsproto reports a frame it could not parse as a close with the code to send.
                conn.close(event.code, event.reason or "protocol error")
            return False
        return True

    def _text(self, event: TextMessage) -> None:
        data = event.data
        self.fragment_bytes += len(data) if data.isascii() else len(data.encode())
        if self.fragment_bytes > self.max_bytes:
            self.fragments = None
            self.conn.close(TOO_BIG, f"message over {self.max_bytes} bytes")
            return
        if not event.message_finished:
            if self.fragments is None:
                self.fragments = []
            self.fragments.append(data)
            if len(self.fragments) > MAX_FRAGMENTS:
                self.fragments = None
                self.conn.close(POLICY, f"a message in over {MAX_FRAGMENTS} frames")
            return
        if self.fragments is not None:
            self.fragments.append(data)
            data = "".join(self.fragments)
            self.fragments = None
        self.fragment_bytes = 0
        try:
            frame = protocol.client_frame(data, self.conn.version)
        except protocol.Invalid as exc:
            self.conn.send(protocol.notice("invalid", str(exc), exc.cid))
            return
        cid = frame.cid
        if not scalar(frame.text):
            self.conn.send(protocol.notice("invalid", "the text is not valid Unicode text", cid))
            return
        if frame.type == "message" and protocol.is_blank(frame.text):
            if cid is not None:
                self.conn.send(protocol.notice("empty", "an empty message is not sent", cid))
            return
        messages = self.messages
        # Typing is throttled per sender where it is handled, so it takes no token from the sender's messages.
        if messages is not None and frame.type != "typing":
            taken, flooding = messages.take(self.key)
            if not taken:
                self.count("rate_limited")
                if flooding:
                    self.conn.close(POLICY, "too many messages")
                elif cid is not None or not self.warned:
                    # A v2 sender hears of each message dropped, so that it can send it again later.
                    self.warned = True
                    text = f"slow down: at most {messages.rate:g} messages per second"
                    self.conn.send(protocol.notice("rate_limited", text, cid))
                return
            self.warned = False
        if frame.type != "message" or frame.reply_to is not None:
            if self.on_frame is None:
                self.conn.send(protocol.notice("invalid", f"{frame.type} frames are not taken here", cid))
            else:
                self.on_frame(self.conn, frame)
        elif cid is None:
            self.on_text(self.conn, frame.text)
        else:
            self.on_text(self.conn, frame.text, cid)


def _pause(sock: Any) -> Callable[[], None] | None:
    """Return what yields to the other greenlets under gevent, or None for an OS thread."""
    if not wire.cooperative(sock):
        return None
    import gevent

    return lambda: gevent.sleep(0)
