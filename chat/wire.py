"""The one place that reaches into simple-websocket and builds raw frames.

flask-sock hands each route a ``simple_websocket.Server`` that has done the
handshake and would start a reader thread.  This server reads the socket from
the connection's own thread instead, so the reader thread is replaced by one
that never starts, and the route takes over the socket and the wsproto state.
``check()`` fails loudly if an upgrade of simple-websocket changes what is used.
"""

from __future__ import annotations

import _socket
import inspect
import ssl
import struct
import sys
from collections.abc import Callable
from typing import Any

import simple_websocket
from wsproto import ConnectionState, WSConnection
from wsproto.connection import Connection

TESTED_VERSIONS = {"simple-websocket": "1.1.0", "wsproto": "1.3.2", "flask-sock": "0.7.0"}
PING = b"\x89\x00"


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
    return sock, protocol


def native(sock: Any) -> Any:
    """Return the operating-system socket under a cooperative (gevent) socket.

    gevent's socket waits for writability when a send would block, even with
    MSG_DONTWAIT; the fan-out must never wait for one client, so it writes to
    the socket underneath, where a full buffer raises BlockingIOError at once.
    """
    if not type(sock).__module__.startswith("gevent"):
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
    server = simple_websocket.ws.ConnectionType.SERVER
    if not hasattr(WSConnection(server), "connection"):
        raise RuntimeError("wsproto.WSConnection no longer has .connection")
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
