"""gunicorn workers whose request headers must arrive within a deadline.

gunicorn's gthread worker hands a new connection to a pool thread as soon as
its first byte arrives, and that thread then reads the rest of the headers
with a blocking socket and no deadline: a thousand clients that send half a
request hold a thousand threads, and nobody else is served.  ``ThreadWorker``
reads the headers in the worker's event loop instead, without blocking, and
gives a connection to a pool thread only once its headers are complete.  A
connection whose headers are not complete within ``CHAT_HEADER_TIMEOUT`` is
answered 408 and closed; headers over ``HEAD_LIMIT`` bytes get 431.

gevent's worker already waits for headers under a ``gevent.Timeout``;
``GeventWorker`` only makes that timeout ``CHAT_HEADER_TIMEOUT``.

Both answer a plain WebSocket handshake to the chat's path themselves when
nothing would see the difference (``native_route``: no access log, request
hook or middleware would run for it; see ``chat.upgrade``), and serve the
client on a thread or greenlet of its own from there.  ``ThreadWorker`` does
it straight from its event loop, with the head it has read: no pool thread,
no gunicorn parser, no Flask request.  Every other request goes through
gunicorn and Flask as before.

gunicorn.conf.py puts these in place of the stock classes, so ``-k gthread``
and ``-k gevent`` get them too.  They use gunicorn internals, checked by
``check()`` when a worker starts; the gunicorn version is pinned.
"""

from __future__ import annotations

import errno
import inspect
import ipaddress
import itertools
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers import gthread

from . import config, upgrade, wire, ws

log = logging.getLogger(__name__)

#: Largest request head read in the event loop; a bigger one gets 431.
HEAD_LIMIT = 64 * 1024
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def check() -> None:
    """Raise RuntimeError if gunicorn's gthread worker no longer works the way ThreadWorker needs."""
    needed = {
        "accept": ["listener"],
        "on_client_socket_readable": ["conn", "client"],
        "finish_request": ["conn", "fs"],
        "handle": ["conn"],
        "murder_pending": [],
    }
    for name, params in needed.items():
        method = getattr(gthread.ThreadWorker, name, None)
        if method is None or list(inspect.signature(method).parameters)[1:] != params:
            raise RuntimeError(f"gunicorn's gthread.ThreadWorker.{name} changed: chat.worker needs ({params})")
    for name in ("init", "close"):
        if not callable(getattr(gthread.TConn, name, None)):
            raise RuntimeError(f"gunicorn's gthread.TConn.{name} is gone: chat.worker needs it")
    if list(inspect.signature(gthread.TConn).parameters) != ["cfg", "sock", "client", "server"]:
        raise RuntimeError("gunicorn's gthread.TConn() changed: chat.worker needs (cfg, sock, client, server)")
    check_hooks()


def check_hooks() -> None:
    """Raise RuntimeError if gunicorn's settings no longer tell a default request hook from one that was set."""
    from gunicorn.config import Config

    for hook in ("pre_request", "post_request"):
        setting = Config().settings.get(hook)
        if setting is None or not callable(getattr(setting, "default", None)) or setting.value is not setting.default:
            raise RuntimeError(f"gunicorn's {hook} setting changed: chat.worker needs its value and default")


def native_route(worker: Any) -> ws.Route | None:
    """Return the chat route whose handshakes worker may answer itself, or None if gunicorn and Flask must see them.

    gunicorn must see a request it would hand to a pre_request or
    post_request hook (it writes no access-log line for a WebSocket either
    way); Flask must see one its app would treat otherwise
    (``ws.native_route``).  Which it is, and why, is logged.
    """
    cfg = worker.cfg
    try:
        for hook in ("pre_request", "post_request"):
            setting = cfg.settings[hook]
            if setting.value is not setting.default:
                raise ws.Unfit(f"gunicorn has a {hook} hook")
        if cfg.proxy_protocol != "off" or cfg.protocol != "http" or cfg.http2_cleartext != "off":
            raise ws.Unfit("gunicorn speaks more than plain HTTP/1 here (PROXY protocol, uwsgi or h2c)")
        if os.environ.get("SCRIPT_NAME"):
            raise ws.Unfit("SCRIPT_NAME is set: gunicorn maps every path under it")
        route = ws.native_route(worker.wsgi)
    except ws.Unfit as unfit:
        log.info("WebSocket handshakes go through Flask: %s", unfit)
        return None
    log.info("WebSocket handshakes to %s are answered by the worker", route.path)
    return route


def forwarders(cfg: Any) -> list[Any]:
    """Return forwarded_allow_ips as gunicorn reads it: "*", or the networks whose peers may set scheme headers."""
    if "*" in cfg.forwarded_allow_ips:
        return ["*"]
    return [ipaddress.ip_network(entry) for entry in cfg.forwarded_allow_ips]


def secure_headers(cfg: Any, allowed: list[Any], peer: str) -> dict[str, str]:
    """Return the scheme headers gunicorn lets peer set: all of them from forwarded_allow_ips, else none."""
    if "*" in allowed:
        return cfg.secure_scheme_headers
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return {}
    return cfg.secure_scheme_headers if any(ip in network for network in allowed) else {}


def counted(worker: Any) -> None:
    """Count an answered handshake towards max_requests, as gunicorn counts every request."""
    worker.nr += 1
    if worker.nr >= worker.max_requests and worker.alive:
        worker.log.info("Autorestarting worker after current request.")
        worker.alive = False


class Starter:
    """Start a thread for each handshake the event loop answers, so that the loop never waits for one to start.

    ``threading.Thread.start`` waits until the new thread runs, which, with
    many threads about, costs the caller more than the rest of a join.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[ws.Answer | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="chat-starter")

    def start(self) -> None:
        """Start starting threads."""
        self._thread.start()

    def serve(self, answer: ws.Answer) -> None:
        """Answer a handshake and serve its client on a new thread of its own."""
        self._jobs.put(answer)

    def stop(self) -> None:
        """Start the threads already asked for, then stop."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (answer := self._jobs.get()) is not None:
            try:
                wire.spawn(answer.raw, f"chat-{answer.address}", answer.run)
            except Exception:
                log.exception("no thread for a connection from %s: closed", answer.address)
                answer.abandon()


def header_timeout() -> float:
    """Return CHAT_HEADER_TIMEOUT, in seconds."""
    return config.from_environment()["HEADER_TIMEOUT"]


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's gthread worker, with request heads read in its event loop under a deadline.

    The event loop's thread owns ``_heads`` (per waiting connection's ticket,
    the connection and the bytes read so far) and ``_deadlines`` (deadlines
    and tickets in the order they fall due); pool threads never touch them.
    A deadline names a ticket rather than its connection, so a connection
    whose head came in time is not kept alive by it until it falls due.
    """

    def init_process(self) -> None:
        check()
        self.header_timeout = header_timeout()
        self._heads: dict[int, tuple[gthread.TConn, bytearray]] = {}
        self._deadlines: deque[tuple[float, int]] = deque()
        self._tickets = itertools.count()
        self._limits = upgrade.Limits.of(self.cfg)
        self._forwarders = forwarders(self.cfg)
        self._starter = Starter()
        super().init_process()

    def run(self) -> None:
        self._route = native_route(self)
        # What a handshake's head starts with: anything else is seen to be none at a glance.
        self._prefix = b"" if self._route is None else f"GET {self._route.path}".encode()
        self._starter.start()
        try:
            super().run()
        finally:
            self._starter.stop()

    def accept(self, listener: socket.socket) -> None:
        """Accept a connection and wait for its request head without a thread."""
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EMFILE, errno.ENFILE):
                raise
            return
        self.nr_conns += 1
        self._await_head(gthread.TConn(self.cfg, client, address, listener.getsockname()))

    def on_client_socket_readable(self, conn: gthread.TConn, client: socket.socket) -> None:
        """Wait for the next request head of a kept-alive connection without a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._await_head(conn)

    def _await_head(self, conn: gthread.TConn) -> None:
        conn.sock.setblocking(False)
        ticket = next(self._tickets)
        self._heads[ticket] = (conn, bytearray())
        self._deadlines.append((time.monotonic() + self.header_timeout, ticket))
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, ticket))

    def _on_head_readable(self, ticket: int, client: socket.socket) -> None:
        conn, head = self._heads[ticket]
        try:
            data = client.recv(HEAD_LIMIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(ticket)
            return
        start = max(0, len(head) - 3)
        head += data
        if head.find(b"\r\n\r\n", start) >= 0 or head.find(b"\n\n", start) >= 0:
            self._forget(ticket)
            if self._answer(conn, bytes(head)):
                return
            future = self.tpool.submit(self._serve, conn, bytes(head))
            future.add_done_callback(lambda done: self.method_queue.defer(self.finish_request, conn, done))
        elif len(head) > HEAD_LIMIT:
            self._drop(ticket, TOO_LARGE)

    def _answer(self, conn: gthread.TConn, head: bytes) -> bool:
        """Take a plain handshake to the chat from gunicorn and answer it on a thread of its own; False if not one."""
        route = self._route
        if route is None or not isinstance(conn.client, tuple):
            return False
        if not head.startswith(self._prefix):
            return False
        peer = conn.client[0]
        up = upgrade.parse(head, peer, route.path, self._limits, secure_headers(self.cfg, self._forwarders, peer))
        address = None if up is None else route.admit(up)
        if address is None:
            return False
        # The connection leaves gunicorn: the hub's place it holds now bounds it, as it bounds every connection.
        self.nr_conns -= 1
        counted(self)
        conn.sock.setblocking(True)
        self._starter.serve(ws.Answer(route, conn.sock, up, address))
        return True

    def _serve(self, conn: gthread.TConn, head: bytes) -> bool:
        """Serve one request whose head was read already; runs in a pool thread."""
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(head)
        return self.handle(conn)

    def murder_pending(self) -> None:
        """Close connections whose request head did not arrive in time, then gunicorn's deferred ones."""
        # A stopping worker takes no new requests: it drops every head still coming.
        now = time.monotonic() if self.alive else float("inf")
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, ticket = deadlines.popleft()
            # A head that came in time, or a connection that went away, left its ticket behind.
            if ticket in self._heads:
                self._drop(ticket, TIMED_OUT)
        super().murder_pending()

    def _forget(self, ticket: int) -> gthread.TConn:
        conn, _ = self._heads.pop(ticket)
        self.poller.unregister(conn.sock)
        return conn

    def _drop(self, ticket: int, answer: bytes = b"") -> None:
        conn = self._forget(ticket)
        if answer:
            try:
                conn.sock.send(answer, socket.MSG_DONTWAIT)
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()


def check_gevent() -> None:
    """Raise RuntimeError if gunicorn's gevent worker no longer works the way GeventWorker needs."""
    from gunicorn.workers import base_async, ggevent

    check_hooks()
    method = getattr(ggevent.GeventWorker, "handle_request", None)
    if method is None or list(inspect.signature(method).parameters)[1:] != ["listener_name", "req", "sock", "addr"]:
        raise RuntimeError(
            "gunicorn's GeventWorker.handle_request changed: chat.worker needs (listener_name, req, sock, addr)"
        )
    if "except StopIteration" not in inspect.getsource(base_async.AsyncWorker.handle):
        raise RuntimeError("gunicorn's AsyncWorker.handle no longer ends a connection on StopIteration")


def gevent_worker() -> type:
    """Return gunicorn's gevent worker class with CHAT_HEADER_TIMEOUT as its request-head deadline."""
    import gevent
    from gunicorn.workers import ggevent

    class GeventWorker(ggevent.GeventWorker):
        """gunicorn's gevent worker, with CHAT_HEADER_TIMEOUT for each request head, answering plain handshakes."""

        def init_process(self) -> None:
            check_gevent()
            self.header_timeout = header_timeout()
            super().init_process()

        def run(self) -> None:
            self._route = native_route(self)
            super().run()

        def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
            route = self._route
            up = address = None
            if route is not None and isinstance(addr, tuple):
                up = upgrade.from_request(req, addr[0], route.path)
                address = None if up is None else route.admit(up)
            if address is None:
                return super().handle_request(listener_name, req, sock, addr)
            counted(self)
            try:
                answer = ws.Answer(route, wire.take(sock), up, address)
            except BaseException:
                route.chat.hub.release(address)
                raise
            try:
                # Started through a bound method rather than an object's __call__: about 0.25 KB less per idle
                # connection, measured (scenario 4).
                wire.spawn(answer.raw, f"chat-{address}", answer.run)
            except BaseException:
                answer.abandon()
                raise
            # gunicorn's handle() then closes the socket object it has, which no longer refers to the connection.
            raise StopIteration()

        def timeout_ctx(self) -> gevent.Timeout:
            return gevent.Timeout(self.header_timeout, False)

    return GeventWorker
