"""Gunicorn settings: gthread workers, one WebSocket per thread, bound to $PORT."""

import os
import shutil
import signal
import sys
import tempfile
import threading

# prometheus_client reads this when it is first imported: workers write their
# metrics to files here, and /metrics sums them over every worker.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chat-metrics-")

from chat import config as chat_config  # noqa: E402

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
# Every open WebSocket holds one thread for its whole life, so threads is the
# connection limit of a worker; a few are kept for plain HTTP requests.
threads = 1000
worker_connections = 100_000
graceful_timeout = 10
timeout = 30
keepalive = 5
control_socket_disable = True
accesslog = None
HTTP_RESERVE = 4


def on_starting(server):
    """Refuse to split rooms across workers that share no backend."""
    try:
        settings = chat_config.from_environment()
    except chat_config.ConfigError as exc:
        sys.exit(f"chat: {exc}")
    if server.cfg.is_ssl:
        sys.exit("chat: terminate TLS in front of gunicorn (Heroku's router, nginx): --certfile is not supported")
    if server.cfg.workers > 1 and settings["BACKEND_URL"].startswith("memory://"):
        sys.exit(
            f"chat: {server.cfg.workers} workers with the memory backend would split every room: "
            "run one worker, or set CHAT_BACKEND_URL (or REDIS_URL) to a Redis URL so workers share rooms"
        )


def when_ready(server):
    """Print the address to open."""
    for address in server.cfg.address:
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            print(f"Chat is running: open http://{host}:{port}/ in your browser", flush=True)


def post_worker_init(worker):
    """Size the connection limit to the worker, and close every socket with 1001 on SIGTERM."""
    chat = worker.wsgi.extensions["chat"]
    hub = chat.hub
    if chat.settings["MAX_CONNECTIONS"] is None:
        capacity = worker.cfg.threads if worker.cfg.worker_class_str == "gthread" else worker.cfg.worker_connections
        hub.limit = max(1, capacity - HTTP_RESERVE)
    stopping = threading.Event()
    closer = threading.Thread(
        target=_close_on, args=(stopping, hub, chat.settings["SHUTDOWN_TIMEOUT"]), name="chat-shutdown"
    )
    closer.start()
    worker.chat_shutdown = (stopping, closer)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        # A signal handler must not block (under gevent it runs in the event
        # loop), so it only wakes the thread that closes the connections.
        stopping.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def _close_on(stopping, hub, timeout):
    stopping.wait()
    hub.shutdown(timeout)


def worker_exit(server, worker):
    """Wait for the connections to close and the fan-out thread to stop."""
    stopping, closer = worker.chat_shutdown
    stopping.set()
    closer.join(timeout=graceful_timeout)


def child_exit(server, worker):
    """Drop the live gauges of a worker that is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this configuration created."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(directory).startswith("chat-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
