"""Fixtures: the app, real servers on free ports, and WebSocket clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket
from redis_server import *  # noqa: F403  (the redis_url fixtures)
from redis_server import free_port

from chat import create_app

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def wait_for(condition: Callable[[], object], timeout: float = 10.0, message: str = "condition") -> object:
    """Poll condition until it returns something true, or fail after timeout."""
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


class Server:
    """A chat server in a subprocess: gunicorn (gthread or gevent) or the Flask development server."""

    def __init__(
        self, kind: str = "gthread", workers: int = 1, threads: int = 300, target: str = "app:app", **env: str
    ) -> None:
        self.kind, self.workers, self.threads, self.target = kind, workers, threads, target
        self.port = free_port()
        self.env = {
            **os.environ,
            "CHAT_HEARTBEAT_INTERVAL": "5",
            "CHAT_MAX_CONNECTIONS_PER_IP": "100000",
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
            return [PYTHON, "-m", "flask", "--app", "app", "run", "--port", str(self.port), "--no-reload"]
        return [
            str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-k", self.kind,
            "-w", str(self.workers), "--threads", str(self.threads),
            "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10", "--pythonpath", str(ROOT / "tests"),
            self.target,
        ]

    def start(self) -> Server:
        """Start the server and wait until it answers /healthz."""
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        wait_for(self._ready, 20, f"{self.kind} server on port {self.port} (log: {self.log_path})")
        if self.kind != "dev":
            wait_for(lambda: len(self.worker_pids()) >= self.workers, 20, "gunicorn workers")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}: {self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def log(self) -> str:
        """Return what the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        """Return the /healthz body."""
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=5) as response:
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


@pytest.fixture(autouse=True)
def own_store(tmp_path_factory, monkeypatch) -> Path:
    """Give each test a message store of its own (servers it restarts keep it), outside the project's folder."""
    path = tmp_path_factory.mktemp("store") / "chat.db"
    monkeypatch.setenv("CHAT_STORE_URL", f"sqlite:///{path}")
    return path


@pytest.fixture
def make_server() -> Iterator[Callable[..., Server]]:
    """Start chat servers with the given settings; stop them after the test."""
    servers: list[Server] = []

    def make(kind: str = "gthread", **options: str) -> Server:
        server = Server(kind, **options)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    """Start a gunicorn gthread chat server with default settings."""
    return make_server()


class Client:
    """A WebSocket client that reads JSON events and keeps what it saw."""

    def __init__(self, url: str, timeout: float = 10, **options: object) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout, **options)
        self.events: list[dict] = []

    def send(self, text: str) -> None:
        self.ws.send(text)

    def next(self, skip_heartbeats: bool = True) -> dict:
        """Return the next event, skipping heartbeats unless asked not to."""
        while True:
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise Closed(close_code(data), data[2:].decode(errors="replace"))
            event = json.loads(data)
            self.events.append(event)
            if skip_heartbeats and event.get("state") == 1:
                continue
            return event

    def next_where(self, predicate: Callable[[dict], bool], limit: int = 10_000) -> dict:
        """Return the first event that matches, reading past the others."""
        for _ in range(limit):
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError("no matching event")

    def chats(self, count: int) -> list[dict]:
        """Read until count chat messages (state 2) arrived and return them."""
        return [self.next_where(lambda e: e.get("state") == 2) for _ in range(count)]

    def close_code(self, timeout: float = 10) -> int:
        """Read until the server closes, and return its close code."""
        self.ws.settimeout(timeout)
        try:
            while True:
                self.next()
        except Closed as closed:
            return closed.code

    def welcome(self) -> dict:
        """Read until the welcome event and return it."""
        return self.next_where(lambda e: e.get("event") == "welcome")

    def drop(self) -> None:
        """End the connection abruptly, without a close frame."""
        self.ws.sock.shutdown(socket.SHUT_RDWR)
        self.ws.sock.close()

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass


class Closed(Exception):
    """The server sent a close frame."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code, self.reason = code, reason


def close_code(data: bytes) -> int:
    """Return the status code of a close frame's payload."""
    return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    """Open WebSocket clients that are closed after the test."""
    clients: list[Client] = []

    def open_client(url: str, **options: object) -> Client:
        client = Client(url, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture
def app():
    """Create an app with test settings."""
    return create_app({"HEARTBEAT_INTERVAL": 0.1})


@pytest.fixture
def client(app):
    """Return a test client of the app."""
    return app.test_client()
