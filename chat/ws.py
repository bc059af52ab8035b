"""The /ws endpoint: check the handshake, then run one connection on a greenlet or thread of its own.

Under gunicorn the route returns once the client is admitted, so that what
the request held (environ, parser, Flask's contexts) is freed, and the
connection lives on with only what it needs; under the development server
it is served on the request's thread.  The chat's own gunicorn workers skip
the route altogether for a plain handshake when nothing in the app would see
the difference (``native_route``): they hand it to an ``Answer``, which admits
and serves the client the same way (``admit``, ``serve``).
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, abort, current_app, request, request_finished, request_started, request_tearing_down
from flask import Request as FlaskRequest
from flask.sessions import SecureCookieSessionInterface
from flask_sock import Sock
from werkzeug.exceptions import HTTPException
from wsproto.connection import Connection as Protocol
from wsproto.utilities import RemoteProtocolError

from . import identity, protocol, upgrade, wire
from .backends import Unavailable
from .connection import CLOSE_WAIT, INTERNAL, POLICY, TRY_AGAIN, Connection
from .mount import Mount, state
from .reader import Reader

log = logging.getLogger(__name__)

#: How long a refused client may take to answer the close frame: short, since
#: a burst of refusals must not hold the threads kept for other requests.
REFUSE_WAIT = 0.5

#: A handshake's query parameters: Flask's request.args, or what upgrade.Upgrade.args found.
Args = Mapping[str, str]
#: A handshake's headers, looked up by lower-case name: Flask's request.headers, or an Upgrade's.
Headers = Mapping[str, str]


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
    if origin is not None and not origin_allowed(origin, request.scheme, request.headers, settings):
        log.info("refused origin %s from %s", origin, remote_address(request.headers, request.remote_addr, settings))
        abort(403, description=f"origin {origin} is not allowed")
    if not settings["COMPRESSION"]:
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


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
    chat.metrics.handshake("flask")
    address = remote_address(request.headers, request.remote_addr, chat.settings)
    admitted = admit(chat, raw, request.args, address)
    if admitted is None:
        return
    since, details = admitted
    app = current_app._get_current_object()
    own = None
    try:
        own = wire.detach(ws, raw)
        if own is not None:
            wire.spawn(own, f"chat-{address}", serve, chat, app, own, ws_protocol, since, details, True)
            return
    except BaseException:
        chat.hub.release(address)
        if own is not None:
            own.close()
        raise
    serve(chat, app, raw, ws_protocol, since, details)


class Answer:
    """Answer a handshake the worker took itself (see native_route), then serve the client (``run``).

    Made once the client's place is reserved (``Route.admit``); run once, on
    the client's own thread or greenlet.  The handshake is let go once
    answered, so that the connection does not keep its headers.
    """

    __slots__ = ("route", "raw", "up", "address")

    def __init__(self, route: Route, raw: socket.socket, up: upgrade.Upgrade, address: str) -> None:
        self.route, self.raw, self.up, self.address = route, raw, up, address

    def run(self) -> None:
        """Send the 101, check and admit the client as the Flask route would, and serve it until it leaves."""
        chat, raw, up = self.route.chat, self.raw, self.up
        self.up = None
        chat.metrics.handshake("worker")
        admitted = None
        try:
            ws_protocol = wire.server_protocol()
            raw.sendall(up.accept())
            admitted = admit(chat, raw, up.args, self.address, reserved=True)
        except OSError:
            pass
        finally:
            del up
            if admitted is None:
                self.abandon()
        if admitted is not None:
            serve(chat, self.route.app, raw, ws_protocol, *admitted, True)

    def abandon(self) -> None:
        """Give back the client's place and close its socket: it will not be served."""
        try:
            self.raw.close()
        finally:
            self.route.chat.hub.release(self.address)


def admit(
    chat: Mount, raw: socket.socket, args: Args, address: str, reserved: bool = False,
) -> tuple[int | None, dict[str, Any]] | None:
    """Check a handshaken client's query and identity and reserve its place (unless reserved already).

    Returns None once the client has been refused.
    """
    settings = chat.settings
    try:
        room = protocol.room(args.get("room"))
        since = protocol.since(args.get("since"))
        version = protocol.version(args.get("v"))
        who = chat.identity(args.get("token"))
        identity.authorize(who, room, settings["ANONYMOUS"])
        # An identified connection is named by its identity, whatever the query says.
        name = who.name if who is not None else protocol.name(args.get("name"))
    except protocol.ProtocolError as exc:
        refuse(chat, raw, POLICY, str(exc))
        return None
    except identity.Refusal as refused:
        log.info("refused %s: %s", address, refused.reason)
        refuse(chat, raw, refused.code, refused.reason)
        return None
    except Exception:
        log.exception("identifying %s failed", address)
        refuse(chat, raw, INTERNAL, "internal error")
        return None
    user = who.id if who is not None else None
    refusal = None if reserved else chat.hub.admit(address)
    if refusal is not None:
        log.info("refused %s: %s", address, refusal[1])
        refuse(chat, raw, *refusal)
        return None
    log.info("connect %s room=%s user=%s", address, room, user)
    return since, {"room": room, "name": name, "user": user, "remote": address, "version": version}


@dataclass(frozen=True, slots=True)
class Route:
    """A chat whose WebSocket handshakes a worker may answer itself: its app, path and mount."""

    app: Flask
    path: str
    chat: Mount

    def admit(self, up: upgrade.Upgrade) -> str | None:
        """Reserve a place for up's client and return its address, if the worker may answer it.

        None leaves the handshake to the Flask route: one from a foreign
        origin, one the hub would refuse (full, too many from one address,
        shutting down: the route refuses it with the reason), or any once an
        identify callback came to be registered.
        """
        chat = self.chat
        origin = up.headers.get("origin")
        if not chat.native or (origin is not None and not origin_allowed(origin, up.scheme, up.headers, chat.settings)):
            return None
        address = remote_address(up.headers, up.peer, chat.settings)
        return address if chat.hub.admit(address) is None else None


class Unfit(Exception):
    """Why a worker must leave a chat's WebSocket handshakes to Flask."""


#: What Flask runs for a request: an app class that overrides any of these may do more than Flask would.
REQUEST_PATH = (
    "__call__", "wsgi_app", "request_context", "full_dispatch_request", "preprocess_request", "dispatch_request",
    "finalize_request", "process_response", "make_response", "do_teardown_request", "handle_user_exception",
    "handle_exception",
)


def native_route(wsgi: Any) -> Route:
    """Return the chat route a worker serving wsgi may answer itself; raise Unfit where Flask must see every request.

    That is the standalone app's case and any app like it: the WSGI object is
    the Flask app itself (no middleware around it, no request-handling method
    of its own, Flask's request class and cookie sessions), the chat's
    WebSocket route is the one Flask would pick for its path, no request hook,
    request signal or identify callback would run for it, no host check or
    simple-websocket option applies, and the chat does not compress.  What
    runs per app context (teardown_appcontext functions) does not count: the
    chat pushes app contexts of its own, and a handshake it answers needs none.
    """
    if not isinstance(wsgi, Flask):
        raise Unfit(f"the WSGI app is a {type(wsgi).__name__}, not a Flask app")
    if "wsgi_app" in vars(wsgi) or "__call__" in vars(wsgi):
        raise Unfit("the Flask app's wsgi_app is wrapped (middleware)")
    overridden = [name for name in REQUEST_PATH if getattr(type(wsgi), name) is not getattr(Flask, name)]
    if overridden:
        raise Unfit(f"the app's class overrides Flask.{overridden[0]}")
    if wsgi.request_class is not FlaskRequest or type(wsgi.session_interface) is not SecureCookieSessionInterface:
        raise Unfit("the app has a request class or session interface of its own")
    chat = wsgi.extensions.get("chat")
    if not isinstance(chat, Mount):
        raise Unfit("the Flask app has no chat")
    if not chat.native:
        raise Unfit("the chat has an identify callback, which reads Flask's request")
    if chat.settings["COMPRESSION"]:
        raise Unfit("the chat compresses (CHAT_COMPRESSION)")
    if wsgi.config["TRUSTED_HOSTS"] is not None:
        raise Unfit("the app checks hosts (TRUSTED_HOSTS)")
    options = wsgi.config.get("SOCK_SERVER_OPTIONS", {})
    if set(options) != set(wire.server_options()):
        raise Unfit("SOCK_SERVER_OPTIONS asks simple-websocket for more (subprotocols, limits)")
    if wsgi.config["SERVER_NAME"] or wsgi.url_map.host_matching or wsgi.subdomain_matching:
        raise Unfit("the app matches routes by host (SERVER_NAME, host or subdomain matching)")
    if any(receivers(signal, wsgi) for signal in (request_started, request_finished, request_tearing_down)):
        raise Unfit("something listens to Flask's request signals")
    mine = [rule for rule in wsgi.url_map.iter_rules() if rule.websocket and rule.endpoint.startswith(f"{bp.name}.")]
    rule = mine[0] if len(mine) == 1 and not mine[0].arguments else None
    try:
        picked = rule is not None and wsgi.url_map.bind("localhost").match(rule.rule, "GET", websocket=True)
    except HTTPException:
        picked = False
    if not picked or picked[0] != rule.endpoint:
        raise Unfit("the chat's WebSocket route is not the one Flask picks for its path")
    hooks = {
        "before_request": wsgi.before_request_funcs, "after_request": wsgi.after_request_funcs,
        "teardown_request": wsgi.teardown_request_funcs, "url_value_preprocessor": wsgi.url_value_preprocessors,
    }
    for kind, functions in hooks.items():
        for scope in (None, bp.name):
            if any(function is not check_handshake for function in functions.get(scope, ())):
                raise Unfit(f"a {kind} hook would run for it")
    return Route(wsgi, rule.rule, chat)


def receivers(signal: Any, sender: Any) -> bool:
    """Tell whether anything listens to a Flask signal sent by sender."""
    return bool(signal.receivers) and any(True for _ in signal.receivers_for(sender))


def serve(
    chat: Mount, app: Flask, raw: socket.socket, ws_protocol: Protocol, since: int | None, details: dict[str, Any],
    owned: bool = False,
) -> None:
    """Join an admitted client to its room and read it until it leaves; then give back its place (and owned socket)."""
    hub, address = chat.hub, details["remote"]
    conn: Connection | None = None
    try:
        conn = hub.connection(raw, ws_protocol, **details)
        if hub.join(conn, since):
            Reader(conn, chat.settings, in_app(app, hub.publish), chat.metrics.count).serve()
    except Unavailable:
        log.warning("backend unavailable: closing %s", address)
        linger(chat, raw, conn, TRY_AGAIN, "chat backend unavailable, try again later")
    except Exception:
        log.exception("connection %s failed", address)
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
        "disconnect %s room=%s code=%s duration=%.1fs reason=%s",
        conn.remote, conn.room, code, time.monotonic() - conn.started, conn.close_reason,
    )


def in_app(app: Flask, publish: Callable[..., None]) -> Callable[..., None]:
    """Wrap publish so that it runs in app's context, as the host's on_message hook may expect."""

    def publish_in_app(*args: Any) -> None:
        with app.app_context():
            publish(*args)

    return publish_in_app


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
