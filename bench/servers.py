"""Start and stop the servers under test: this project's, and the two peers."""

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
SERVER_CPU = 1
SPARE_THREADS = 20


@dataclass
class Running:
    """A started server: its process, port and WebSocket URL."""

    name: str
    process: subprocess.Popen
    port: int

    @property
    def pid(self) -> int:
        """Return the pid of the server's top process."""
        return self.process.pid

    @property
    def url(self) -> str:
        """Return the WebSocket URL of the chat endpoint."""
        return f"ws://127.0.0.1:{self.port}/ws"


def gunicorn(app: str, port: int, threads: int, worker_class: str = "gthread") -> list[str]:
    """Return the gunicorn command line for one worker with room for threads connections."""
    return [
        sys.executable, "-m", "gunicorn",
        "-k", worker_class, "-w", "1", "--threads", str(threads),
        "--worker-connections", str(threads + 100),
        "--graceful-timeout", "3", "--no-control-socket",
        "--log-level", "warning",
        "-b", f"127.0.0.1:{port}",
        app,
    ]


def command(name: str, port: int, connections: int, limit: int | None) -> tuple[list[str], Path, dict]:
    """Return command, working directory and environment to serve connections at once.

    With a limit, the server is configured to refuse connections past it: the chat
    server through CHAT_MAX_CONNECTIONS (with spare threads to send the refusal),
    the tutorial server by having exactly that many threads. Every client of the
    benchmark comes from 127.0.0.1, so the chat server's per-address limit is
    raised to the same number.
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
        return gunicorn("tutorial:app", port, threads), BENCH / "peers", env
    if name == "node":
        return ["node", str(BENCH / "peers" / "node_server.js"), str(port)], BENCH, env
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
def start(name: str, connections: int, limit: int | None = None, log: Path | None = None) -> Iterator[Running]:
    """Run a server on a free port, pinned to its CPU, until the block ends."""
    port = proc.free_port()
    cmd, cwd, env = command(name, port, connections, limit)
    with open(log, "w") if log else nullcontext(subprocess.DEVNULL) as out:
        process = subprocess.Popen(
            proc.pinned(cmd, SERVER_CPU), cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if not proc.wait_http(port) or process.poll() is not None:
                raise RuntimeError(f"{name} server did not start (see {log})")
            yield Running(name, process, port)
        finally:
            stop(process)
