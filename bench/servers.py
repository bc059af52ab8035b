"""Start and stop the servers under test: this project's, and its peers."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

from bench import proc

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PEERS = BENCH / "peers"
PEERS_PYTHON = BENCH / ".venv" / "bin" / "python"
SERVER_CPU = 1
SPARE_THREADS = 20


@dataclass(frozen=True)
class Server:
    """A server the benchmark can run: what it speaks and which Python it needs."""

    name: str
    protocol: str = "ws"
    peers_venv: bool = False


SERVERS = {
    s.name: s
    for s in (
        Server("chat"),
        Server("chat-gevent"),
        Server("node"),
        Server("websockets", peers_venv=True),
        Server("picows", peers_venv=True),
        Server("socketio-gevent", protocol="socketio", peers_venv=True),
        Server("socketio-threading", protocol="socketio", peers_venv=True),
        Server("tutorial"),
    )
}


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
    python: Path | str = sys.executable, connections: int | None = None,
) -> list[str]:
    """Return the gunicorn command line for one worker with room for threads connections."""
    return [
        str(python), "-m", "gunicorn",
        "-k", worker_class, "-w", "1", "--threads", str(threads),
        "--worker-connections", str(connections or threads + 100),
        "--graceful-timeout", "3", "--no-control-socket",
        "--log-level", "warning",
        "-b", f"127.0.0.1:{port}",
        app,
    ]


def command(name: str, port: int, connections: int, limit: int | None) -> tuple[list[str], Path, dict]:
    """Return command, working directory and environment to serve connections at once.

    With a limit, the server is configured to refuse connections past it: the chat
    server through CHAT_MAX_CONNECTIONS (with spare threads to send the refusal),
    the tutorial server and Flask-SocketIO's threading mode by having exactly that
    many threads, Flask-SocketIO under gevent by that many worker connections. The
    asyncio and Node servers have no such setting and take every connection. Every
    client of the benchmark comes from 127.0.0.1, so the chat server's per-address
    limit is raised to the same number.
    """
    env = dict(os.environ)
    if name in ("chat", "chat-gevent"):
        threads = limit + 10 if limit else connections + SPARE_THREADS
        most = str(limit or connections + SPARE_THREADS // 2)
        env.update(CHAT_RATE_LIMIT="off", CHAT_MAX_CONNECTIONS=most, CHAT_MAX_CONNECTIONS_PER_IP=most)
        worker_class = "gevent" if name == "chat-gevent" else "gthread"
        return gunicorn("app:app", port, threads, worker_class), ROOT, env
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
) -> Iterator[Running]:
    """Run cmd pinned to the server's CPU until the block ends, once it answers HTTP on port."""
    with open(log, "w") if log else nullcontext(subprocess.DEVNULL) as out:
        process = subprocess.Popen(
            proc.pinned(cmd, SERVER_CPU), cwd=cwd, env=env,
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
def start(name: str, connections: int, limit: int | None = None, log: Path | None = None) -> Iterator[Running]:
    """Run a server on a free port, pinned to its CPU, until the block ends."""
    port = proc.free_port()
    cmd, cwd, env = command(name, port, connections, limit)
    with launch(name, SERVERS[name].protocol, cmd, cwd, env, port, log) as running:
        yield running


@contextmanager
def faulty(protocol: str, faults: dict, log: Path | None = None) -> Iterator[Running]:
    """Run bench/faulty.js, a broadcast server that injects faults, speaking protocol."""
    port = proc.free_port()
    config = json.dumps({"port": port, "protocol": protocol, **faults})
    cmd = ["node", str(BENCH / "faulty.js"), config]
    with launch(f"faulty-{protocol}", protocol, cmd, BENCH, dict(os.environ), port, log) as running:
        yield running
