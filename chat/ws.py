"""The /ws endpoint: check the handshake, then run one connection on this thread."""

from __future__ import annotations

import logging
import select
import socket
import time

from flask import Blueprint, Request, abort, request
from flask_sock import Sock
from wsproto.utilities import RemoteProtocolError

from . import identity, protocol, wire
from .backends import Unavailable
from .connection import CLOSE_WAIT, INTERNAL, POLICY, TRY_AGAIN, Connection
from .mount import state
from .reader import Reader

log = logging.getLogger(__name__)

#: How long a refused client may take to answer the close frame: short, since
#: a burst of refusals must not hold the threads kept for other requests.
REFUSE_WAIT = 0.5

bp = Blueprint("chat_ws", __name__)
sock = Sock()


@bp.errorhandler(RemoteProtocolError)
def bad_handshake(error: RemoteProtocolError) -> tuple[str, int]:
    """Answer a handshake wsproto cannot parse with 400 and why."""
    return f"400 Bad Request: invalid WebSocket handshake: {error}\n", 400


@bp.before_request
def check_handshake() -> None:
    """Refuse a foreign origin with 403 and take permessage-deflate off the offer unless enabled."""
    settings = state().settings
    if request.headers.get("Sec-WebSocket-Version") != "13" or not request.headers.get("Sec-WebSocket-Key"):
        abort(400, description="a WebSocket handshake needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin, request, settings):
        log.info("refused origin %s from %s", origin, remote_address(request, settings["TRUST_PROXY"]))
        abort(403, description=f"origin {origin} is not allowed")
    if not settings["COMPRESSION"]:
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


def origin_allowed(origin: str, req: Request, settings: dict) -> bool:
    """Tell whether a page from origin may open a WebSocket here."""
    allowed = settings["ALLOWED_ORIGINS"]
    origin = origin.rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    scheme, host = req.scheme, req.headers.get("Host", "")
    if settings["TRUST_PROXY"]:
        scheme = req.headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
        host = req.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    return origin == f"{scheme}://{host}".lower()


def remote_address(req: Request, trust_proxy: bool) -> str:
    """Return the client's address, from X-Forwarded-For only behind a trusted proxy."""
    forwarded = req.headers.get("X-Forwarded-For") if trust_proxy else None
    if forwarded:
        return forwarded.split(",")[-1].strip()
    return req.remote_addr or "unknown"


@sock.route("/ws", bp=bp)
def chat_socket(ws: object) -> None:
    """Serve one chat client until it leaves."""
    chat = state()
    settings = chat.settings
    raw, ws_protocol = wire.take_over(ws)
    address = remote_address(request, settings["TRUST_PROXY"])
    try:
        room = protocol.room(request.args.get("room"))
        since = protocol.since(request.args.get("since"))
        version = protocol.version(request.args.get("v"))
        who = chat.identity(request.args.get("token"))
        identity.authorize(who, room, settings["ANONYMOUS"])
        # An identified connection is named by its identity, whatever the query says.
        name = who.name if who is not None else protocol.name(request.args.get("name"))
    except protocol.ProtocolError as exc:
        refuse(raw, POLICY, str(exc))
        return
    except identity.Refusal as refused:
        log.info("refused %s: %s", address, refused.reason)
        refuse(raw, refused.code, refused.reason)
        return
    except Exception:
        log.exception("identifying %s failed", address)
        refuse(raw, INTERNAL, "internal error")
        return
    user = who.id if who is not None else None
    hub = chat.hub
    refusal = hub.admit(address)
    if refusal is not None:
        log.info("refused %s: %s", address, refusal[1])
        refuse(raw, *refusal)
        return
    conn: Connection | None = None
    try:
        conn = hub.connection(raw, ws_protocol, room=room, name=name, user=user, remote=address, version=version)
        log.info("connect %s room=%s user=%s", address, room, user)
        if hub.join(conn, since):
            Reader(conn, settings, hub.publish, chat.metrics.count).serve()
    except Unavailable:
        log.warning("backend unavailable: closing %s", address)
        linger(raw, conn, TRY_AGAIN, "chat backend unavailable, try again later")
    except Exception:
        log.exception("connection %s failed", address)
        linger(raw, conn, INTERNAL, "internal error")
    finally:
        try:
            if conn is not None:
                hub.leave(conn)
        finally:
            hub.release(address)
            shut(raw)
        if conn is not None:
            code = conn.close_code or 1006
            chat.metrics.closed(code)
            log.info(
                "disconnect %s room=%s code=%s duration=%.1fs reason=%s",
                address, room, code, time.monotonic() - conn.started, conn.close_reason,
            )


def refuse(raw: socket.socket, code: int, reason: str) -> None:
    """Close a connection that was never admitted, and let the client read why."""
    state().metrics.closed(code)
    try:
        raw.sendall(wire.close_frame(code, reason))
        raw.shutdown(socket.SHUT_WR)
        drain(raw, REFUSE_WAIT)
    except OSError:
        pass
    shut(raw)


def linger(raw: socket.socket, conn: Connection | None, code: int, reason: str) -> None:
    """Close conn, send the close frame, and give the client a moment to read it."""
    if conn is None:
        refuse(raw, code, reason)
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
