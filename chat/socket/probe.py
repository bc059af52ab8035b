"""Try, at start-up, that flask-sock, simple-websocket and wsproto still do what ``wire`` relies on.

Each step drives the real library through the path a chat client's
handshake takes (a Flask app with a flask-sock route, the request's socket
handed over before the route runs) over a socket pair, and fails with the
installed versions named.
"""

from __future__ import annotations

import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from . import wire

PACKAGES = ("flask-sock", "simple-websocket", "wsproto")
HANDSHAKE = {
    "Upgrade": "websocket", "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
}


class Changed(RuntimeError):
    """A library the chat reaches into no longer behaves as the chat needs."""


def versions(packages: tuple[str, ...] = PACKAGES) -> str:
    """Return the installed versions of packages, as 'name version, ...'."""
    found = []
    for package in packages:
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def check() -> None:
    """Raise Changed unless flask-sock, simple-websocket and wsproto (and gevent, if loaded) behave as wire needs."""
    try:
        handshake()
        if "gevent" in sys.modules:
            import gevent.socket

            probe_socket = gevent.socket.socket()
            try:
                wire.native(probe_socket)
            finally:
                probe_socket.close()
    except Changed:
        raise
    except Exception as exc:
        raise Changed(f"{versions()}: {exc}") from exc


def handshake() -> None:
    """Make a handshake through a flask-sock route with the socket handed over, and read frames through wsproto."""
    from flask import Flask, request
    from flask_sock import Sock

    app = Flask("chat-probe")
    # A host's options for its own routes must not change what the chat's route gets.
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": 30}
    # What fails inside the route is raised here, with the versions, not logged as a request's error.
    app.config["PROPAGATE_EXCEPTIONS"] = True
    taken: list[tuple[Any, Connection]] = []
    failed: list[Exception] = []

    def route(ws: Any) -> None:
        try:
            taken.append((ws, wire.take_over(ws)[1]))
        except Exception as exc:
            failed.append(exc)

    app.before_request(lambda: wire.hand_over(request.environ))
    Sock(app).route("/probe")(route)
    server_side, client_side = socket.socketpair()
    try:
        app.test_client().get("/probe", headers=HANDSHAKE, environ_base={"werkzeug.socket": server_side})
        client_side.settimeout(1)
        try:
            answer = client_side.recv(65536)
        except OSError:
            answer = b""
        if failed:
            raise Changed(f"{versions()}: the chat cannot take over the socket: {failed[0]}")
        if not answer.startswith(b"HTTP/1.1 101") or not taken:
            raise Changed(f"{versions()}: flask-sock's route no longer answers through the request's socket")
        ws, protocol = taken[0]
        if ws.mode != "werkzeug":
            raise Changed(f"{versions()}: simple-websocket no longer tells a server by its socket's environ key")
        ws.thread.join(5)
        if ws.thread.is_alive():
            raise Changed(f"{versions()}: simple-websocket's reader thread no longer ends when it cannot read")
        frames(protocol)
    finally:
        server_side.close()
        client_side.close()


def frames(protocol: Connection) -> None:
    """Feed protocol a text frame and a ping as a client sends them; fail unless it reads them as wire expects."""
    client = Connection(ConnectionType.CLIENT)
    protocol.receive_data(client.send(TextMessage("probe")) + client.send(Ping(b"p")))
    events = list(protocol.events())
    if [type(event) for event in events] != [TextMessage, Ping] or events[0].data != "probe":
        raise Changed(f"{versions(('wsproto',))}: wsproto.Connection no longer reads frames as expected: {events}")
    protocol.send(events[1].response())
    if wire.compressed(protocol):
        raise Changed(f"{versions(('wsproto',))}: wsproto no longer keeps its negotiated extensions in ._proto")
