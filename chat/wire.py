"""The one place that reaches into simple-websocket and builds raw frames.

flask-sock hands each route a ``simple_websocket.Server`` that has done the
handshake and would start a reader thread.  This server reads the socket from
the connection's own thread instead, so the reader thread is replaced by one
that never starts, and the route takes over the socket and the wsproto state.
Under gunicorn the route then takes the socket from gunicorn too (``detach``)
and serves the connection on a greenlet or thread of its own (``spawn``), so
that the request's objects (the WSGI environ, gunicorn's parser, Flask's
contexts, simple-websocket's Server) are freed once the handshake is done.
``check()`` fails loudly if an upgrade of simple-websocket changes what is used.
"""

from __future__ import annotations

import _socket
import inspect
import select
import ssl
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import simple_websocket
from wsproto import ConnectionState, WSConnection
from wsproto.connection import Connection, ConnectionType

TESTED_VERSIONS = {"simple-websocket": "1.1.0", "wsproto": "1.3.2", "flask-sock": "0.7.0"}
PING = b"\x89\x00"


class NoEvents:
    """Stand in for wsproto's queue of pending events, which only receive_data(None) fills.

    Nothing here calls receive_data(None), so the queue would stay empty for
    the connection's life, and an empty deque costs 760 bytes.
    """

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def append(self, event: object) -> None:
        raise RuntimeError("wsproto queued an event: chat.wire's NoEvents no longer fits wsproto.Connection")


NO_EVENTS = NoEvents()


class DormantThread:
    """Stand in for simple-websocket's reader thread and never run."""

    def __init__(self, target: Callable[[], Any] | None = None, **_: Any) -> None:
        self.name = "simple-websocket-reader-unused"
        self.target = target

    def start(self) -> None:
        """Do nothing: the connection's own thread reads the socket."""

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        """Return at once: there is nothing to wait for."""


class UnusedEvent:
    """Stand in for the event simple-websocket's reader thread would set."""

    def set(self) -> None:
        """Do nothing: no reader thread runs."""

    def clear(self) -> None:
        """Do nothing: no reader thread runs."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


def server_options() -> dict[str, Any]:
    """Return the options flask-sock passes to every simple-websocket Server."""
    return {"thread_class": DormantThread, "event_class": UnusedEvent}


def take_over(ws: simple_websocket.Server) -> tuple[Any, Connection]:
    """Return the socket and the open wsproto connection of an accepted WebSocket."""
    sock, handshake = ws.sock, ws.ws
    if isinstance(sock, ssl.SSLSocket):
        raise RuntimeError("TLS sockets are not supported: terminate TLS in front of the server")
    if not isinstance(handshake, WSConnection) or handshake.state is not ConnectionState.OPEN:
        raise RuntimeError("simple-websocket did not hand over an open wsproto connection")
    protocol = handshake.connection
    if not isinstance(protocol, Connection):
        raise RuntimeError("wsproto.WSConnection no longer keeps its Connection in .connection")
    # flask-sock calls ws.close() after the route returns; the route has
    # already closed the connection, so that call must find it closed.  The
    # handshake's h11 state is not needed any more: let it go.
    ws.connected = False
    ws.ws = None
    protocol._events = NO_EVENTS
    return sock, protocol


def server_protocol() -> Connection:
    """Return the wsproto state of a server connection whose handshake was answered without wsproto."""
    protocol = Connection(ConnectionType.SERVER)
    protocol._events = NO_EVENTS
    return protocol


def detach(ws: simple_websocket.Server, sock: Any) -> Any | None:
    """Return a socket object of the route's own for sock's connection, or None where the server keeps it.

    gunicorn closes (and may first half-close) its socket object once the
    route returns; detached, that object no longer refers to the
    connection, which lives on in the returned one.  The development server
    writes to its socket after the route returns, so there the connection is
    served inline instead.
    """
    if ws.mode != "gunicorn":
        return None
    return take(sock)


def take(sock: Any) -> Any:
    """Return a socket object of the caller's own for sock's connection, leaving sock closed to it."""
    return type(sock)(fileno=sock.detach())


def spawn(sock: Any, name: str, target: Callable[..., None], *args: Any) -> None:
    """Run target(*args) on a greenlet of its own for a gevent socket, else on a new thread named name."""
    if cooperative(sock):
        import gevent

        # A raw greenlet: no Greenlet object, links or spawning tree to keep for the connection's life.
        gevent.spawn_raw(target, *args)
        return
    threading.Thread(target=target, args=args, name=name, daemon=True).start()


def cooperative(sock: Any) -> bool:
    """Tell whether sock is a gevent socket."""
    return type(sock).__module__.startswith("gevent")


class Polled:
    """Receive from an operating-system socket, waiting in poll() so that its blocking mode is never changed.

    The fan-out's non-blocking writes share the socket, so a socket timeout
    (which makes every send wait for room) must not be set on it.
    """

    __slots__ = ("sock", "size", "poller")

    def __init__(self, sock: Any, size: int) -> None:
        self.sock, self.size = sock, size
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)

    def receive(self, timeout: float) -> bytes | None:
        """Return the next bytes, b"" once the peer is gone, or None if timeout seconds pass first."""
        if not self.poller.poll(timeout * 1000):
            return None
        try:
            return self.sock.recv(self.size)
        except OSError:
            return b""


class Waited:
    """Receive from a gevent socket, waiting on the socket's own watcher.

    A gevent socket's timeout is its own: the operating-system socket under
    it, which the fan-out writes to, stays non-blocking.  gevent's poll()
    would make a watcher, an event and a result for every wait.
    """

    __slots__ = ("sock", "size")

    def __init__(self, sock: Any, size: int) -> None:
        self.sock, self.size = sock, size

    def receive(self, timeout: float) -> bytes | None:
        """Return the next bytes, b"" once the peer is gone, or None if timeout seconds pass first."""
        sock = self.sock
        sock.settimeout(timeout)
        try:
            return sock.recv(self.size)
        except (TimeoutError, BlockingIOError):
            # With a timeout of 0 gevent raises BlockingIOError rather than time out.
            return None
        except OSError:
            return b""


def receiver(sock: Any, size: int) -> Polled | Waited:
    """Return what reads sock, at most size bytes at a time, with a timeout."""
    return Waited(sock, size) if cooperative(sock) else Polled(sock, size)


def native(sock: Any) -> Any:
    """Return the operating-system socket under a cooperative (gevent) socket.

    gevent's socket waits for writability when a send would block, even with
    MSG_DONTWAIT; the fan-out must never wait for one client, so it writes to
    the socket underneath, where a full buffer raises BlockingIOError at once.
    """
    if not cooperative(sock):
        return sock
    inner = getattr(sock, "_sock", None)
    if not isinstance(inner, _socket.socket):
        raise RuntimeError("gevent's socket no longer keeps the operating-system socket in ._sock")
    return inner


def compressed(protocol: Connection) -> bool:
    """Tell whether the client and server agreed on permessage-deflate."""
    return bool(protocol._proto.extensions)


def check() -> None:
    """Raise RuntimeError if simple-websocket, wsproto or gevent no longer work the way this module needs."""
    accepted = inspect.signature(simple_websocket.Server.__init__).parameters
    missing = [name for name in ("thread_class", "event_class") if name not in accepted]
    if missing:
        raise RuntimeError(f"simple_websocket.Server() no longer takes {missing}")
    setup = inspect.getsource(simple_websocket.ws.Base.__init__)
    for attribute in ("self.sock", "self.ws", "self.connected"):
        if attribute not in setup:
            raise RuntimeError(f"simple_websocket's Base no longer sets {attribute}")
    if "self.mode = 'gunicorn'" not in inspect.getsource(simple_websocket.Server.__init__):
        raise RuntimeError("simple_websocket's Server no longer sets mode = 'gunicorn' for gunicorn's sockets")
    server = simple_websocket.ws.ConnectionType.SERVER
    if not hasattr(WSConnection(server), "connection"):
        raise RuntimeError("wsproto.WSConnection no longer has .connection")
    if not isinstance(getattr(Connection(server), "_events", None), deque):
        raise RuntimeError("wsproto.Connection no longer keeps its pending events in a deque at ._events")
    # Made at __init__, filled by receive_data(None) alone, drained by events(): NoEvents stands in for it.
    uses = sum(inspect.getsource(f).count("self._events") for f in vars(Connection).values() if inspect.isfunction(f))
    if uses != 4:
        raise RuntimeError("wsproto.Connection uses ._events in new ways: re-check chat.wire.NoEvents")
    frames = getattr(Connection(server), "_proto", None)
    if not isinstance(getattr(frames, "extensions", None), list):
        raise RuntimeError("wsproto.Connection no longer keeps its negotiated extensions in ._proto.extensions")
    if "gevent" in sys.modules:
        import gevent.socket

        probe = gevent.socket.socket()
        try:
            native(probe)
        finally:
            probe.close()


def text_frame(payload: bytes) -> bytes:
    """Encode payload as one unmasked, unfragmented text frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """Encode an unmasked close frame with a status code and a short reason."""
    # Cut to 123 bytes on a character boundary: a close reason must be valid UTF-8.
    body = struct.pack("!H", code) + reason.encode()[:123].decode(errors="ignore").encode()
    return bytes((0x88, len(body))) + body
