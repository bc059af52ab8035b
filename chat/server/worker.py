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

Both let the chat's route take a WebSocket's socket from them once its
handshake is made (``wire.release_sockets``); ``ThreadWorker`` then counts
that connection out once (``finish_request``).

gunicorn.conf.py puts these in place of the stock classes, so ``-k gthread``
and ``-k gevent`` get them too.  They use gunicorn 27's internals, which
``probe`` tries on a stock worker when a worker starts.
"""

from __future__ import annotations

import errno
import itertools
import logging
import selectors
import socket
import time
from collections import deque
from functools import partial
from typing import Any

from gunicorn.workers import gthread

from .. import config
from ..socket import wire
from . import probe

log = logging.getLogger(__name__)

#: Largest request head read in the event loop; a bigger one gets 431.
HEAD_LIMIT = 64 * 1024
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


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
        probe.check_threads()
        self.header_timeout = header_timeout()
        self._heads: dict[int, tuple[gthread.TConn, bytearray]] = {}
        self._deadlines: deque[tuple[float, int]] = deque()
        self._tickets = itertools.count()
        wire.release_sockets()
        super().init_process()

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
            future = self.tpool.submit(self._serve, conn, bytes(head))
            future.add_done_callback(lambda done: self.method_queue.defer(self.finish_request, conn, done))
        elif len(head) > HEAD_LIMIT:
            self._drop(ticket, TOO_LARGE)

    def _serve(self, conn: gthread.TConn, head: bytes) -> bool:
        """Serve one request whose head was read already; runs in a pool thread."""
        conn.sock.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(head)
        return self.handle(conn)

    def finish_request(self, conn: gthread.TConn, fs: Any) -> None:
        """Count out a connection the chat's route took from gunicorn once, then finish the rest as gunicorn does."""
        # gunicorn's own path would fail on the socket object left empty, and count the connection out twice.
        if conn.sock.fileno() < 0:
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

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


def gevent_worker() -> type:
    """Return gunicorn's gevent worker class with CHAT_HEADER_TIMEOUT as its request-head deadline."""
    import gevent
    from gunicorn.workers import ggevent

    class GeventWorker(ggevent.GeventWorker):
        """gunicorn's gevent worker, with CHAT_HEADER_TIMEOUT for each request head."""

        def init_process(self) -> None:
            self.header_timeout = header_timeout()
            wire.release_sockets()
            super().init_process()

        def run(self) -> None:
            # Here, not in init_process: gevent has patched the standard library and made its hub by now.
            probe.check_greenlets(ggevent.GeventWorker)
            super().run()

        def timeout_ctx(self) -> gevent.Timeout:
            return gevent.Timeout(self.header_timeout, False)

    return GeventWorker
