"""Start and stop the servers under test: this project's (as it is, or at an earlier commit), and its peers."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from pathlib import Path

from bench import baseline, proc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
PEERS_PYTHON = BENCH / ".venv" / "bin" / "python"
SERVER_CPU = 1
SPARE_THREADS = 20

#: Settings given to every chat server on top of the benchmark's own (python -m bench --env).
CHAT_ENV: dict[str, str] = {}
#: The secret the chat servers check the tokens of identified scenarios (17) with.
JWT_SECRET = "a-secret-for-the-bench-only-0123456789abcdef"
#: The commit "chat", "chat-gevent", ... run at instead of the working tree (python -m bench --at), or None.
CURRENT: str | None = None


@dataclass(frozen=True)
class Server:
    """A server the benchmark can run: what it speaks, how it is served and which Python it needs.

    ``chat`` marks this project's server, which has rooms and greets every
    joiner with a welcome; ``worker`` is the gunicorn worker class of a
    gunicorn server and ``threaded`` says whether it holds an OS thread per
    connection; ``backend`` and ``workers`` are the chat server's backend
    (``memory`` or ``redis``) and gunicorn workers; ``ref`` is the commit a
    baseline runs (None: the working tree).
    """

    name: str
    protocol: str = "ws"
    peers_venv: bool = False
    chat: bool = False
    worker: str | None = None
    threaded: bool = False
    backend: str = "memory"
    workers: int = 1
    ref: str | None = None

    @property
    def commit(self) -> str | None:
        """Return the commit this chat server runs at, or None for the working tree."""
        return self.ref or CURRENT

    @property
    def root(self) -> Path:
        """Return the folder the chat server runs from: the repository, or the export of its commit."""
        return ROOT if self.commit is None else baseline.folder(self.commit)


def chat_server(worker: str, backend: str = "memory", workers: int = 1) -> Server:
    """Return this project's server under a gunicorn worker class, backend and number of workers."""
    name = "chat" + ("-redis" if backend == "redis" else "") + ("-gevent" if worker == "gevent" else "")
    if workers > 1:
        name += f"-w{workers}"
    return Server(name, chat=True, worker=worker, threaded=worker == "gthread", backend=backend, workers=workers)


CHAT_SERVERS = tuple(
    chat_server(worker, backend, workers)
    for backend, workers in (("memory", 1), ("redis", 1), ("redis", 2))
    for worker in ("gthread", "gevent")
)

SERVERS = {
    s.name: s
    for s in (
        *CHAT_SERVERS,
        Server("node"),
        Server("websockets", peers_venv=True),
        Server("picows", peers_venv=True),
        Server("socketio-gevent", protocol="socketio", peers_venv=True, worker="gevent"),
        Server("socketio-threading", protocol="socketio", peers_venv=True, worker="gthread", threaded=True),
        Server("tutorial", worker="gthread", threaded=True),
    )
}

#: What runs when --servers is not given (each scenario takes those that fit it), before any baseline.
DEFAULT = (
    "chat", "chat-gevent", "chat-redis", "chat-redis-gevent", "chat-redis-gevent-w2",
    "node", "websockets", "picows", "socketio-gevent", "socketio-threading", "tutorial",
)


def add_baseline(ref: str) -> list[str]:
    """Register this project's servers at commit ref as <name>-<short commit>; return their names."""
    commit = baseline.resolve(ref)
    names = []
    for server in CHAT_SERVERS:
        name = f"{server.name}-{commit[:7]}"
        SERVERS[name] = replace(server, name=name, ref=commit)
        names.append(name)
    return names


def counterpart(name: str, **changes) -> str | None:
    """Return the name of the chat server like name but for changes (backend, workers), if there is one."""
    server = SERVERS[name]
    if not server.chat:
        return None
    wanted = replace(server, **changes)
    found = [s.name for s in SERVERS.values() if replace(s, name=wanted.name) == wanted]
    return found[0] if found else None


@dataclass
class Running:
    """A started server: its process, port and the URL its clients connect to."""

    name: str
    process: subprocess.Popen
    port: int
    protocol: str = "ws"

    @property
    def pid(self) -> int:
        """Return the pid of the server's top process."""
        return self.process.pid

    @property
    def url(self) -> str:
        """Return the WebSocket URL of the chat endpoint, or the Socket.IO server's URL."""
        if self.protocol == "socketio":
            return f"http://127.0.0.1:{self.port}"
        return f"ws://127.0.0.1:{self.port}/ws"


def gunicorn(
    app: str, port: int, threads: int, worker_class: str = "gthread",
    python: Path | str = sys.executable, connections: int | None = None, workers: int = 1,
) -> list[str]:
    """Return the gunicorn command line for workers each with room for threads connections."""
    return [
        str(python), "-m", "gunicorn",
        "-k", worker_class, "-w", str(workers), "--threads", str(threads),
        "--worker-connections", str(connections or threads + 100),
        "--graceful-timeout", "3", "--no-control-socket",
        "--log-level", "warning",
        "-b", f"127.0.0.1:{port}",
        app,
    ]


def command(
    name: str, port: int, connections: int, limit: int | None, backend_url: str | None = None,
    store: Path | None = None,
) -> tuple[list[str], Path, dict]:
    """Return command, working directory and environment to serve connections at once.

    With a limit, the server is configured to refuse connections past it: the chat
    server through CHAT_MAX_CONNECTIONS (with spare threads to send the refusal),
    the tutorial server and Flask-SocketIO's threading mode by having exactly that
    many threads, Flask-SocketIO under gevent by that many worker connections. The
    asyncio and Node servers have no such setting and take every connection. Every
    client of the benchmark comes from 127.0.0.1, so the chat server's per-address
    limit is raised to the same number. A chat server on Redis is given
    backend_url; each of several workers has room for every connection. A chat
    server keeps its messages (a commit with a message store does) in a fresh
    SQLite file in the folder store, the default store in a place of its own.
    """
    env = dict(os.environ)
    server = SERVERS[name]
    if server.chat:
        threads = limit + 10 if limit else connections + SPARE_THREADS
        most = str(limit or connections + SPARE_THREADS // 2)
        # Every client comes from 127.0.0.1: no limit per address (connections, handshakes a second) may bite.
        env.update(CHAT_RATE_LIMIT="off", CHAT_MAX_CONNECTIONS=most, CHAT_MAX_CONNECTIONS_PER_IP=most,
                   CHAT_HANDSHAKE_RATE="off", CHAT_JWT_SECRET=JWT_SECRET)
        if store is not None:
            env["CHAT_STORE_URL"] = f"sqlite:///{store / 'chat.db'}"
        env.update(CHAT_ENV)
        if server.backend == "redis":
            if backend_url is None:
                raise ValueError(f"{name} needs a redis-server")
            env["CHAT_BACKEND_URL"] = backend_url
        return gunicorn("app:app", port, threads, server.worker, workers=server.workers), server.root, env
    if name == "tutorial":
        threads = limit or connections + SPARE_THREADS
        return gunicorn("tutorial:app", port, threads), PEERS, env
    if name == "socketio-gevent":
        most = limit or connections + SPARE_THREADS
        app = "socketio_server:create_app('gevent')"
        return gunicorn(app, port, 1, "gevent", PEERS_PYTHON, connections=most), PEERS, env
    if name == "socketio-threading":
        threads = limit or connections + SPARE_THREADS
        return gunicorn("socketio_server:create_app('threading')", port, threads, python=PEERS_PYTHON), PEERS, env
    if name == "websockets":
        return [str(PEERS_PYTHON), "websockets_server.py", str(port)], PEERS, env
    if name == "picows":
        return [str(PEERS_PYTHON), "picows_server.py", str(port)], PEERS, env
    if name == "node":
        return ["node", str(PEERS / "node_server.js"), str(port)], BENCH, env
    raise ValueError(f"unknown server {name!r}")


def stop(process: subprocess.Popen) -> None:
    """Stop a server started by start(): SIGTERM, then SIGKILL to its process group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=6)
            return
        except subprocess.TimeoutExpired:
            pass
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


@contextmanager
def launch(
    name: str, protocol: str, cmd: list[str], cwd: Path, env: dict, port: int, log: Path | None,
    pinned: bool = True,
) -> Iterator[Running]:
    """Run cmd (pinned to the server's CPU unless told not to) until the block ends, once it answers HTTP on port."""
    with open(log, "w") if log else nullcontext(subprocess.DEVNULL) as out:
        process = subprocess.Popen(
            proc.pinned(cmd, SERVER_CPU) if pinned else cmd, cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if not proc.wait_http(port) or process.poll() is not None:
                raise RuntimeError(f"{name} server did not start (see {log})")
            yield Running(name, process, port, protocol)
        finally:
            stop(process)


@contextmanager
def start(
    name: str, connections: int, limit: int | None = None, log: Path | None = None,
    backend_url: str | None = None, pinned: bool = True,
) -> Iterator[Running]:
    """Run a server on a free port, pinned to its CPU unless told not to, until the block ends."""
    port = proc.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as store:
        cmd, cwd, env = command(name, port, connections, limit, backend_url, Path(store))
        with launch(name, SERVERS[name].protocol, cmd, cwd, env, port, log, pinned) as running:
            yield running


@contextmanager
def faulty(protocol: str, faults: dict, log: Path | None = None) -> Iterator[Running]:
    """Run bench/faulty.js, a broadcast server that injects faults, speaking protocol."""
    port = proc.free_port()
    config = json.dumps({"port": port, "protocol": protocol, **faults})
    cmd = ["node", str(BENCH / "faulty.js"), config]
    with launch(f"faulty-{protocol}", protocol, cmd, BENCH, dict(os.environ), port, log) as running:
        yield running
