"""The one place that reaches into simple-websocket and builds raw frames.

flask-sock hands each route a ``simple_websocket.Server`` that has made the
handshake and started a reader thread.  This server reads the socket from
the connection's own thread instead: the handshake goes through a
``Handover``, on which simple-websocket's reader thread ends at once, and the
route takes over the socket and the wsproto state.  Under the chat's
gunicorn workers the route then takes the socket from gunicorn too (``detach``)
and serves the connection on a greenlet or thread of its own (``spawn``), so
that the request's objects (the WSGI environ, gunicorn's parser, Flask's
contexts, simple-websocket's Server) are freed once the handshake is done.
``probe.check()`` tries at start-up that simple-websocket and wsproto still do what is used here.
"""

from __future__ import annotations

import _socket
import select
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

import simple_websocket
from wsproto import ConnectionState, WSConnection
from wsproto.connection import Connection

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


class Handover:
    """Stand in for a chat client's socket while simple-websocket makes the handshake, and keep the socket.

    flask-sock's route builds a ``simple_websocket.Server`` with the app's
    ``SOCK_SERVER_OPTIONS``, which sends the 101 through ``send`` and then
    starts a reader thread.  Here that thread finds nothing to read or poll
    and ends at once, so the chat's own thread reads the socket, whatever
    options the host set for its own routes.
    """

    __slots__ = ("sock",)

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def send(self, data: bytes) -> int:
        """Send the handshake's answer."""
        self.sock.sendall(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        """Refuse: the chat's own thread reads this socket."""
        raise OSError("the chat's own thread reads this socket")

    def fileno(self) -> int:
        """Refuse, so that a ping selector cannot watch the socket either."""
        raise ValueError("the chat's own thread reads this socket")

    def close(self) -> None:
        """Do nothing: the chat closes the socket when its connection ends."""


#: Where each WSGI server simple-websocket knows puts the client's socket, in the order it looks.
SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")


def hand_over(environ: dict[str, Any]) -> None:
    """Have simple-websocket make this request's handshake through a Handover, so the chat keeps the socket."""
    for key in SOCKET_KEYS:
        if key in environ:
            environ[key] = Handover(environ[key])
            return
    raise RuntimeError("the WSGI server gives no socket for WebSockets (run under gunicorn or flask run)")


def take_over(ws: simple_websocket.Server) -> tuple[Any, Connection]:
    """Return the socket and the open wsproto connection of an accepted WebSocket."""
    sock, handshake = ws.sock, ws.ws
    if not isinstance(sock, Handover):
        raise RuntimeError("simple-websocket did not make the handshake through chat.wire.Handover")
    sock = sock.sock
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
    # flask-sock keeps ws in a class it makes for each request, which only a full collection frees: the
    # request's environ (and the Request in it) must not wait for that with it.
    ws.environ = None
    protocol._events = NO_EVENTS
    return sock, protocol


def detach(ws: simple_websocket.Server, sock: Any) -> Any | None:
    """Return a socket object of the route's own for sock's connection, or None where the server keeps it.

    gunicorn closes (and may first half-close) its socket object once the
    route returns; detached, that object no longer refers to the
    connection, which lives on in the returned one.  The development server
    writes to its socket after the route returns, so there the connection is
    served inline instead, and so it is under a stock gthread worker, whose
    ``finish_request`` would count a connection it no longer holds twice.
    """
    if ws.mode != "gunicorn" or not _released:
        return None
    return take(sock)


#: Set by the chat's gunicorn workers, which let the route take a connection from them (``detach``).
_released = False


def release_sockets() -> None:
    """Let routes in this process take their connections from the gunicorn worker (the chat's workers only)."""
    global _released
    _released = True


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


def text_frame(payload: bytes) -> bytes:
    """Encode payload as one unmasked, unfragmented text frame."""
    return text_head(len(payload)) + payload


def text_head(size: int) -> bytes:
    """Encode the head of an unmasked, unfragmented text frame of size bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def close_frame(code: int, reason: str = "") -> bytes:
    """Encode an unmasked close frame with a status code and a short reason."""
    # Cut to 123 bytes on a character boundary: a close reason must be valid UTF-8.
    body = struct.pack("!H", code) + reason.encode()[:123].decode(errors="ignore").encode()
    return bytes((0x88, len(body))) + body
