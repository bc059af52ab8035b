"""Try, when a worker starts, that gunicorn's stock workers still do what the chat's subclasses rely on.

A stock worker is made with gunicorn's default configuration (so no hook of
the deployment sees it) and driven over a socket pair: the calls the chat's
workers override or make are watched, and a difference fails with
gunicorn's version named.
"""

from __future__ import annotations

import os
import selectors
import socket
from concurrent import futures
from importlib.metadata import version
from typing import Any

from gunicorn.config import Config
from gunicorn.workers import gthread

HEAD = b"GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n"
PEER = ("127.0.0.1", 0)


class Changed(RuntimeError):
    """gunicorn's workers no longer behave as the chat's workers need."""


class Quiet:
    """A logger that logs nothing: the probe's request is not the deployment's business."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def app(environ: dict, start_response: Any) -> list[bytes]:
    """Answer the probe's request."""
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def failing(step: str) -> Changed:
    """Return the error for a step of gunicorn's workers that no longer behaves as needed."""
    return Changed(f"gunicorn {version('gunicorn')}: {step}; the chat's workers were made for gunicorn 27")


class Watched(gthread.ThreadWorker):
    """A stock gthread worker with no listener that notes which of its methods gunicorn calls."""

    def __init__(self) -> None:
        super().__init__(0, os.getppid(), [], None, 30, Config(), Quiet())
        self.tmp.close()
        self.calls: list[tuple[str, Any]] = []
        self.turns = 0
        self.wsgi = app

    def notify(self) -> None:
        # Each turn of the event loop: wake it again at once, and stop it after a few turns.
        self.method_queue.defer(lambda: None)
        self.turns += 1
        self.alive = self.turns < 3

    def murder_pending(self) -> None:
        self.calls.append(("murder_pending", None))
        super().murder_pending()

    def on_client_socket_readable(self, conn: gthread.TConn, client: socket.socket) -> None:
        self.calls.append(("on_client_socket_readable", (conn, client)))


def check_threads() -> None:
    """Raise Changed unless gthread's loop, handle and finish_request behave as chat's ThreadWorker relies on."""
    try:
        worker = Watched()
        worker.poller = selectors.DefaultSelector()
        worker.method_queue.init()
        worker.tpool = futures.ThreadPoolExecutor(1)
        served(worker)
        worker.run()
    except Changed:
        raise
    except Exception as exc:
        raise failing(f"its gthread worker failed the chat's probe ({exc!r})") from exc
    if ("murder_pending", None) not in worker.calls:
        raise failing("ThreadWorker.run() no longer calls murder_pending() each turn (the header deadline needs it)")


def served(worker: Watched) -> None:
    """Serve one request whose head was read already, as ThreadWorker does, and finish it kept alive, then closed."""
    ours, theirs = socket.socketpair()
    try:
        conn = gthread.TConn(worker.cfg, ours, PEER, PEER)
        if ours.getblocking():
            raise failing("TConn() no longer makes its socket non-blocking")
        ours.setblocking(True)
        conn.init()
        conn.parser.unreader.unread(HEAD)
        kept = worker.handle(conn)
        if theirs.recv(4096)[:12] != b"HTTP/1.1 200" or kept is not True:
            raise failing("ThreadWorker.handle() no longer serves a connection whose head was unread to its parser")
        worker.nr_conns = 1
        worker.finish_request(conn, done(True))
        key = worker.poller.get_key(ours)
        key.data(key.fileobj)
        if worker.calls[-1] != ("on_client_socket_readable", (conn, ours)):
            raise failing("a kept-alive connection no longer comes back through on_client_socket_readable(conn, sock)")
        worker.poller.unregister(ours)
        worker.keepalived_conns.remove(conn)
        theirs.shutdown(socket.SHUT_WR)
        worker.finish_request(conn, done(False))
        if worker.nr_conns != 0 or ours.fileno() != -1:
            raise failing("finish_request() no longer counts out and closes a connection that is over")
    finally:
        ours.close()
        theirs.close()


def done(result: bool) -> futures.Future:
    """Return a finished future with result, as the pool hands finish_request one."""
    future: futures.Future = futures.Future()
    future.set_result(result)
    return future


def check_greenlets(worker_class: type) -> None:
    """Raise Changed unless gunicorn's gevent worker reads each request head under timeout_ctx()."""
    ours, theirs = socket.socketpair()
    timed: list[bool] = []

    class Timed(worker_class):
        def timeout_ctx(self) -> Any:
            timed.append(True)
            return super().timeout_ctx()

    try:
        worker = Timed(0, os.getppid(), [], None, 30, Config(), Quiet())
        worker.tmp.close()
        worker.wsgi, worker.header_timeout = app, 5
        theirs.sendall(HEAD)
        theirs.shutdown(socket.SHUT_WR)
        worker.handle(ours, ours, PEER)
        answer = theirs.recv(4096)
    except Exception as exc:
        raise failing(f"its gevent worker failed the chat's probe ({exc!r})") from exc
    finally:
        ours.close()
        theirs.close()
    if answer[:12] != b"HTTP/1.1 200" or not timed:
        raise failing("the gevent worker no longer reads a request head under timeout_ctx()")
