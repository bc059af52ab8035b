"""Gunicorn settings: gthread workers, one WebSocket per thread, bound to $PORT.

Nothing here imports the project at load time: gunicorn reads this file
before it applies --chdir, so the hooks import it when they run.
"""

import gc
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading

# prometheus_client reads this when it is first imported: workers write their
# metrics to files here, and /metrics sums them over every worker.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="chat-metrics-")

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
# After its handshake every open WebSocket runs on a thread of its own, and the
# pool (started as needed) serves handshakes and plain HTTP. threads, less a few
# kept for plain HTTP, is also a worker's connection limit: an OS thread each.
threads = 1000
# Each connection is a file descriptor: stop accepting before the process runs
# out of them, rather than fail in accept().
worker_connections = max(100, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100)
graceful_timeout = 10
timeout = 30
keepalive = 5
control_socket_disable = True
accesslog = None
HTTP_RESERVE = 4


def on_starting(server):
    """Refuse to split rooms across workers that share no backend; use the workers with a header deadline."""
    from chat import config as chat_config

    try:
        settings = chat_config.from_environment()
    except chat_config.ConfigError as exc:
        sys.exit(f"chat: {exc}")
    _use_chat_workers(server)
    if server.cfg.is_ssl:
        sys.exit("chat: terminate TLS in front of gunicorn (Heroku's router, nginx): --certfile is not supported")
    if server.cfg.workers > 1 and settings["BACKEND_URL"].startswith("memory://"):
        sys.exit(
            f"chat: {server.cfg.workers} workers with the memory backend would split every room: "
            "run one worker, or set CHAT_BACKEND_URL (or REDIS_URL) to a Redis URL so workers share rooms"
        )


def on_reload(server):
    """Keep the chat's workers after a reload re-read the worker class."""
    _use_chat_workers(server)


def _use_chat_workers(server):
    from gunicorn.workers import gthread

    from chat.server import worker

    if server.worker_class is gthread.ThreadWorker:
        server.worker_class = worker.ThreadWorker
    elif server.cfg.worker_class_str in ("gevent", "gunicorn.workers.ggevent.GeventWorker"):
        server.worker_class = worker.gevent_worker()
    server.log.info("Chat worker: %s.%s", server.worker_class.__module__, server.worker_class.__qualname__)


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
    from gunicorn.workers import gthread

    import chat

    chats = chat.instances()
    threaded = isinstance(worker, gthread.ThreadWorker)
    for each in chats:
        if each.settings["MAX_CONNECTIONS"] is None:
            capacity = worker.cfg.threads if threaded else worker.cfg.worker_connections
            each.hub.limit = max(1, capacity - HTTP_RESERVE)
    stopping = threading.Event()
    closer = threading.Thread(target=_close_on, args=(stopping, chats), name="chat-shutdown")
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
    # What the worker has built by now (modules, the app) lives as long as it does. Frozen, it is left out of
    # every later full collection, whose pause grows with what it walks and holds up every delivery meanwhile.
    gc.collect()
    gc.freeze()


def _close_on(stopping, chats):
    stopping.wait()
    for each in chats:
        each.hub.shutdown(each.settings["SHUTDOWN_TIMEOUT"])


def worker_exit(server, worker):
    """Wait for the connections to close and the fan-out thread to stop."""
    # A worker that failed to boot never got as far as post_worker_init.
    if hasattr(worker, "chat_shutdown"):
        stopping, closer = worker.chat_shutdown
        stopping.set()
        closer.join(timeout=graceful_timeout)
    # Thawed, what start-up froze is collected while the interpreter is still whole, not torn down
    # piecemeal with its modules (a logging handler's finaliser would then find gevent half gone).
    gc.unfreeze()


def child_exit(server, worker):
    """Drop the live gauges of a worker that is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this configuration created."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(directory).startswith("chat-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
