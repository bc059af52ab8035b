"""The one way tests start a chat server: gunicorn with the project's gunicorn.conf.py, as deployed.

`Server` runs gunicorn (gthread or gevent) or, where a test is about development, `flask run`, on a free
port, with any WSGI target (`app:app`, a host app, a middleware) and any health path. `on_each_worker`
places clients on chosen workers deliberately. `Served` serves an app in the test's own process with
werkzeug; it is only for tests of the Python API (`chat.publish`, `chat.history`), which need the app object.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from flask import Flask
from ports import free_port
from werkzeug.serving import BaseWSGIServer, make_server

__all__ = ["BIN", "PYTHON", "ROOT", "Served", "Server", "answers", "free_port", "on_each_worker", "proc_status",
           "under_gunicorn", "wait_for", "worker_of"]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
T = TypeVar("T")


def wait_for(condition: Callable[[], object], timeout: float = 10.0, message: str = "condition") -> object:
    """Poll condition until it returns something true, or fail after timeout (a bound on a hang, not a speed)."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def proc_status(pid: int, field: str) -> int:
    """Return a number from /proc/PID/status, such as Threads or VmRSS (in KB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def answers(url: str, process: subprocess.Popen | None = None) -> bool:
    """Tell whether url answers 200; fail at once if the server process died."""
    if process is not None and process.poll() is not None:
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        raise AssertionError(f"the server exited with {process.returncode}: {output}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Server:
    """A chat server in a subprocess: gunicorn (gthread or gevent) as deployed, or the Flask development server.

    target is any WSGI object gunicorn can load (tests/ is on its Python path); health the path that answers
    200 once it serves; cwd the folder gunicorn starts in (the configuration is then given by its full path
    and --chdir points at the project, as a deployment from another folder does); args more gunicorn options.
    """

    def __init__(
        self, kind: str = "gthread", workers: int = 1, threads: int = 300, target: str = "app:app",
        health: str = "/healthz", cwd: Path | None = None, args: Sequence[str] = (), **env: str,
    ) -> None:
        self.kind, self.workers, self.threads, self.target = kind, workers, threads, target
        self.health_path, self.cwd, self.args = health, cwd, list(args)
        self.port = free_port()
        self.env = {
            **os.environ,
            "CHAT_HEARTBEAT_INTERVAL": "5",
            "CHAT_MAX_CONNECTIONS_PER_IP": "100000",
            # Every test client comes from 127.0.0.1: the per-address handshake limit would refuse the crowds.
            "CHAT_HANDSHAKE_RATE": "off",
            **{k: str(v) for k, v in env.items()}}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # A server made outside a test (a module's shared one) keeps its messages in a folder of its own.
        self._store = tempfile.TemporaryDirectory(prefix="chat-store-")
        self.env.setdefault("CHAT_STORE_URL", f"sqlite:///{self._store.name}/chat.db")
        self.process: subprocess.Popen | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"chat-server-{self.port}.log"
        # A port is reused by later servers: this one's log starts empty (a restart appends to it).
        self.log_path.unlink(missing_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        if self.kind == "dev":
            # As under gunicorn, the tests' own apps can be the target.
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), self.env.get("PYTHONPATH")]))
            return [PYTHON, "-m", "flask", "--app", self.target, "run", "--port", str(self.port), "--no-reload"]
        where = ["-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT)] if self.cwd else ["-c", "gunicorn.conf.py"]
        return [
            str(BIN / "gunicorn"), *where, "-k", self.kind,
            "-w", str(self.workers), "--threads", str(self.threads),
            "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", "--pythonpath", str(ROOT / "tests"),
            *self.args, self.target,
        ]

    def start(self) -> Server:
        """Start the server and wait until its health path answers 200."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), cwd=self.cwd or ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(self._ready, 30, f"{self.kind} server on port {self.port} (log: {self.log_path})")
        if self.kind != "dev":
            wait_for(lambda: len(self.worker_pids()) >= self.workers, 20, "gunicorn workers")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log(self) -> str:
        """Return what the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 5) -> dict:
        """Return the body of the health path (waiting up to timeout for the answer)."""
        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def worker_pids(self) -> list[int]:
        """Return the pids of gunicorn's workers (or the dev server itself)."""
        if self.kind == "dev":
            return [self.pid]
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def threads_of(self, pid: int) -> int:
        """Return the number of OS threads of a process."""
        return proc_status(pid, "Threads")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Stop the server and return its exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        code = self.process.returncode
        self.process = None
        return code

    def restart(self) -> Server:
        """Stop the server and start it again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_of(server: Server, client: object) -> int:
    """Return the pid of the gunicorn worker that holds the server side of client's connection (a Client, a
    websocket-client WebSocket, a socket, or the client's local port)."""
    sock_port = client if isinstance(client, int) else local_socket(client).getsockname()[1]
    # A set: read while sockets come and go, the table can list one twice.
    inodes = sorted({
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].rsplit(":", 1)[1], 16) == server.port and int(fields[2].rsplit(":", 1)[1], 16) == sock_port
    })
    assert len(inodes) == 1, inodes
    for pid in server.worker_pids():
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inodes[0]}]":
                    return pid
            except OSError:
                continue
    raise AssertionError(f"no worker of {server.url} holds the connection from port {sock_port}")


def local_socket(client: object) -> socket.socket:
    """Return the socket under a Client, a websocket-client WebSocket or a raw client."""
    while not isinstance(client, socket.socket):
        client = client.ws if hasattr(client, "ws") else client.sock
    return client


def on_each_worker(server: Server, open_client: Callable[[int], T], per_worker: int = 1) -> list[T]:
    """Open per_worker clients on each of the server's workers, in worker order, by stopping (SIGSTOP) the others
    while each connects: the kernel gives a connection to whichever worker accepts first, so without this a
    burst often lands on one. open_client(n) must return once the client is served (welcomed)."""
    workers = server.worker_pids()
    opened: list[T] = []
    for worker in workers:
        others = [pid for pid in workers if pid != worker]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            for _ in range(per_worker):
                opened.append(open_client(len(opened)))
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)
    return opened


@contextmanager
def under_gunicorn(target: str, health: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run target under gunicorn with the project's configuration; yield its URL and process once health answers."""
    with Server("gthread", target=target, health=health, **env) as server:
        yield server.url, server.process


class Served:
    """Serve apps in this process with werkzeug until stop(), then stop each chat's threads too (Python API tests)."""

    def __init__(self) -> None:
        self.running: list[tuple[BaseWSGIServer, threading.Thread, Flask]] = []

    def serve(self, app: Flask) -> str:
        """Start serving app and return its http:// base URL."""
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
        thread.start()
        self.running.append((server, thread, app))
        return f"http://127.0.0.1:{server.server_port}"

    def stop(self) -> None:
        """Stop every server and the chats of their apps."""
        for server, thread, app in self.running:
            server.shutdown()
            thread.join(5)
            app.extensions["chat"].hub.stop()
