"""The /ws endpoint: flask-sock's route makes the handshake, then the connection runs on a thread of its own.

Under the chat's gunicorn workers the route returns once the client is
admitted, so that what the request held (environ, parser, Flask's contexts)
is freed, and the connection lives on with only what it needs; elsewhere
(the development server, a stock gunicorn) it is served on the request's
thread.
"""

from __future__ import annotations

import hashlib
import logging
import select
import socket
import time
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, request
from flask_sock import Sock
from wsproto.connection import Connection as Protocol
from wsproto.utilities import RemoteProtocolError

from .. import protocol
from ..backends import Unavailable
from ..socket import wire
from ..socket.connection import CLOSE_WAIT, INTERNAL, POLICY, TRY_AGAIN, Connection
from ..socket.reader import Reader
from ..text import sender_key as sender_key_ok
from . import identity
from .mount import Mount, state

log = logging.getLogger(__name__)

#: How long a refused client may take to answer the close frame: short, since
#: a burst of refusals must not hold the threads kept for other requests.
REFUSE_WAIT = 0.5

#: A handshake's query parameters (Flask's request.args).
Args = Mapping[str, str]
#: A handshake's headers, looked up by name (Flask's request.headers).
Headers = Mapping[str, str]


bp = Blueprint("chat_ws", __name__)
sock = Sock()


@bp.errorhandler(RemoteProtocolError)
def bad_handshake(error: RemoteProtocolError) -> tuple[str, int]:
    """Answer a handshake wsproto cannot parse with 400 and why."""
    return f"400 Bad Request: invalid WebSocket handshake: {error}\n", 400


@bp.get("/ws")
def not_a_websocket() -> tuple[str, int]:
    """Answer a plain GET of the WebSocket's path with 400 and what it is."""
    return "400 Bad Request: this is a WebSocket endpoint; connect to it with a WebSocket client.\n", 400


@bp.before_request
def check_handshake() -> None:
    """Refuse a foreign origin with 403, take permessage-deflate off the offer unless enabled, and keep the socket."""
    if request.endpoint != f"{bp.name}.chat_socket":
        return
    settings = state().settings
    if request.headers.get("Sec-WebSocket-Version") != "13" or not request.headers.get("Sec-WebSocket-Key"):
        abort(400, description="a WebSocket handshake needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request.scheme, request.headers, settings):
        log.info("refused origin %r from %r", origin, remote_address(request.headers, request.remote_addr, settings))
        abort(403, description=f"origin {origin} is not allowed")
    if not settings["COMPRESSION"]:
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    wire.hand_over(request.environ)


def origin_allowed(origin: str, scheme: str, headers: Headers, settings: dict) -> bool:
    """Tell whether a page from origin may open a WebSocket here."""
    allowed = settings["ALLOWED_ORIGINS"]
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    host = headers.get("host", "")
    if settings["TRUST_PROXY"]:
        scheme = headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
        host = headers.get("x-forwarded-host", host).split(",")[0].strip()
    return origin == f"{scheme}://{host}".lower()


def remote_address(headers: Headers, peer: str | None, settings: dict) -> str:
    """Return the client's address, from X-Forwarded-For only behind a trusted proxy."""
    forwarded = headers.get("x-forwarded-for") if settings["TRUST_PROXY"] else None
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return peer or "unknown"


@sock.route("/ws", bp=bp)
def chat_socket(ws: object) -> None:
    """Check one chat client's handshake and admit it, then serve it until it leaves."""
    chat = state()
    raw, ws_protocol = wire.take_over(ws)
    address = remote_address(request.headers, request.remote_addr, chat.settings)
    admitted = admit(chat, raw, request.args, address)
    if admitted is None:
        return
    since, details = admitted
    own = None
    try:
        own = wire.detach(ws, raw)
        if own is not None:
            wire.spawn(own, f"chat-{address}", serve, chat, own, ws_protocol, since, details, True)
            return
    except BaseException:
        chat.hub.release(address)
        if own is not None:
            own.close()
        raise
    serve(chat, raw, ws_protocol, since, details)


def admit(
    chat: Mount, raw: socket.socket, args: Args, address: str,
) -> tuple[int | None, dict[str, Any]] | None:
    """Check a handshaken client's query and identity and reserve its place.

    Returns None once the client has been refused.
    """
    settings = chat.settings
    refusal = chat.hub.handshake(address)
    if refusal is not None:
        log.info("refused %r: %s", address, refusal[1])
        chat.metrics.count("handshakes_refused")
        refuse(chat, raw, *refusal)
        return None
    try:
        since = protocol.since(args.get("since"))
        version = protocol.version(args.get("v"))
        key = args.get("key") or None
        if key is not None and not sender_key_ok(key):
            raise protocol.ProtocolError("key must be 16-64 of A-Z a-z 0-9 _ -")
        who = chat.identity(args.get("token"))
        if who is not None and who.issued is not None and chat.hub.signouts.refuses(who.id, who.issued):
            raise identity.Refusal(identity.UNAUTHENTICATED, "signed out: sign in again")
        if args.get("dm") is None:
            room = protocol.room(args.get("room"))
            identity.authorize(who, room, settings["ANONYMOUS"])
        else:
            room = dm_room(chat, version, who, args["dm"])
        # An identified connection is named by its identity, whatever the query says.
        name = who.name if who is not None else protocol.name(args.get("name"))
    except protocol.ProtocolError as exc:
        refuse(chat, raw, POLICY, str(exc))
        return None
    except identity.Refusal as refused:
        log.info("refused %r: %r", address, refused.reason)
        refuse(chat, raw, refused.code, refused.reason)
        return None
    except Unavailable as exc:
        log.warning("refused %r: %s", address, exc)
        refuse(chat, raw, TRY_AGAIN, "the chat's store is unavailable, try again later")
        return None
    except Exception:
        log.exception("identifying %r failed", address)
        refuse(chat, raw, INTERNAL, "internal error")
        return None
    user = who.id if who is not None else None
    scope = f"u:{user}" if user is not None else sender_key(key)
    refusal = chat.hub.admit(address)
    if refusal is not None:
        log.info("refused %r: %s", address, refusal[1])
        refuse(chat, raw, *refusal)
        return None
    log.info("connect %r room=%s user=%r name=%r", address, room, user, name)
    return since, {
        "room": room, "name": name, "user": user, "remote": address, "version": version, "scope": scope,
    }


def sender_key(key: str | None) -> str | None:
    """Return the scope of a guest's client ids: a digest of the key it keeps across reconnects, if it gave one."""
    if key is None or key == "":
        return None
    return "k:" + hashlib.sha256(key.encode()).hexdigest()[:32]


def dm_room(chat: Mount, version: int, who: identity.Identity | None, other: str) -> str:
    """Return the room of the DM between who and other (dm=, protocol v3), creating it the first time."""
    if version < 3:
        raise protocol.ProtocolError("dm= needs protocol v3 (v=3)")
    if who is None or who.id is None:
        raise identity.Refusal(identity.UNAUTHENTICATED, "sign in to open a DM")
    if protocol.user(other) == who.id:
        raise protocol.ProtocolError("a DM is between two users: not with yourself")
    return chat.hub.conversations.membership.dm(who.id, other)


def serve(
    chat: Mount, raw: socket.socket, ws_protocol: Protocol, since: int | None, details: dict[str, Any],
    owned: bool = False,
) -> None:
    """Join an admitted client to its room and read it until it leaves; then give back its place (and owned socket)."""
    hub, address = chat.hub, details["remote"]
    conn: Connection | None = None
    try:
        conn = hub.connection(raw, ws_protocol, **details)
        if hub.join(conn, since):
            Reader(conn, chat.settings, hub.publish, chat.metrics.count, hub.act, hub.messages).serve()
    except Unavailable:
        log.warning("backend unavailable: closing %r", address)
        linger(chat, raw, conn, TRY_AGAIN, "chat backend unavailable, try again later")
    except Exception:
        log.exception("connection %r failed", address)
        linger(chat, raw, conn, INTERNAL, "internal error")
    finally:
        try:
            if conn is not None:
                hub.leave(conn)
        finally:
            shut(raw)
            if owned:
                raw.close()
            try:
                if conn is not None:
                    ended(chat, conn)
            finally:
                # Last, so that a connection counted gone has nothing left to do on its thread.
                hub.release(address)


def ended(chat: Mount, conn: Connection) -> None:
    """Count and log a connection that is over."""
    code = conn.close_code or 1006
    chat.metrics.closed(code)
    log.info(
        "disconnect %r room=%s code=%s duration=%.1fs reason=%r",
        conn.remote, conn.room, code, time.monotonic() - conn.started, conn.close_reason,
    )


def refuse(chat: Mount, raw: socket.socket, code: int, reason: str) -> None:
    """Close a connection that was never admitted, and let the client read why."""
    chat.metrics.closed(code)
    try:
        raw.sendall(wire.close_frame(code, reason))
        raw.shutdown(socket.SHUT_WR)
        drain(raw, REFUSE_WAIT)
    except OSError:
        pass
    shut(raw)


def linger(chat: Mount, raw: socket.socket, conn: Connection | None, code: int, reason: str) -> None:
    """Close conn, send the close frame, and give the client a moment to read it."""
    if conn is None:
        refuse(chat, raw, code, reason)
        return
    conn.close(code, reason)
    conn.finish()
    drain(raw, CLOSE_WAIT)


def drain(raw: socket.socket, seconds: float) -> None:
    """Read and drop what the client still sends until it closes or seconds pass."""
    deadline = time.monotonic() + seconds
    poller = select.poll()
    poller.register(raw.fileno(), select.POLLIN)
    try:
        while (left := deadline - time.monotonic()) > 0:
            if poller.poll(left * 1000) and not raw.recv(65536):
                return
    except OSError:
        return


def shut(raw: socket.socket) -> None:
    """End the TCP connection in both directions."""
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
