"""A test kit for host apps: serve an app's chat on a free port for one test, and hand out Python clients.

In the host's conftest.py::

    from chat.testing import chat_backend, chat_redis, chat_server, chat_settings  # noqa: F401  (fixtures)

and in a test::

    def test_hello(chat_server, chat_settings):
        served = chat_server(create_app(chat_settings))
        with served.client(room="lobby", name="ann") as ann, served.client(room="lobby", name="bob") as bob:
            ann.send("hi")
            assert bob.wait(lambda frame: frame["state"] == 2)["message"] == "hi"

``chat_settings`` (the app's CHAT_BACKEND_URL and a CHAT_STORE_URL of the
test's own) runs a test twice, through ``chat_backend``: on the memory backend,
and on a real redis-server when one is on PATH (skipped with the reason otherwise).
May import client, protocol and config only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from .client import Client


class Served:
    """One app served by werkzeug's threaded server on 127.0.0.1 and a free port, until stop()."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, name="chat-testing-server", daemon=True)
        self._thread.start()
        self._clients: list[Client] = []
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        path = next(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint == "chat_ws.chat_socket")
        #: The chat's WebSocket under the host, wherever it mounted it (its url_prefix).
        self.ws_url = self.url.replace("http", "ws", 1) + path

    def client(self, room: str | None = None, **options: Any) -> Client:
        """Return a connected client of the served chat (welcomed already), closed when the test ends."""
        client = Client(self.ws_url, room, **options)
        self._clients.append(client)
        return client.connect()

    def stop(self) -> None:
        """Close the clients handed out, stop serving, and stop the chat's threads."""
        for client in self._clients:
            client.close()
        self._server.shutdown()
        self._thread.join(10)
        self._server.server_close()
        self.app.extensions["chat"].hub.stop()


@pytest.fixture
def chat_server() -> Iterator[Callable[[Flask], Served]]:
    """Serve host apps' chats for the length of the test: chat_server(app) returns a Served."""
    served: list[Served] = []

    def serve(app: Flask) -> Served:
        served.append(Served(app))
        return served[-1]

    yield serve
    for one in reversed(served):
        one.stop()


@pytest.fixture(scope="session")
def chat_redis() -> Iterator[str]:
    """Run a redis-server for the session and yield its URL; skip when redis-server is not on PATH."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH (apt-get install redis-server): the Redis variant is skipped")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="chat-testing-redis-") as folder:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", folder]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for_redis(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(10)


@pytest.fixture(params=["memory", "redis"])
def chat_backend(request: pytest.FixtureRequest) -> str:
    """Return a backend URL for the host's CHAT_BACKEND_URL: memory://, then a real redis-server's."""
    if request.param == "memory":
        return "memory://"
    url = request.getfixturevalue("chat_redis")
    _flush(url)
    return url


@pytest.fixture
def chat_settings(chat_backend: str, tmp_path: Path) -> dict[str, str]:
    """Return the chat settings of a test's app: chat_backend's CHAT_BACKEND_URL and a store of its own."""
    return {"CHAT_BACKEND_URL": chat_backend, "CHAT_STORE_URL": f"sqlite:///{tmp_path / 'chat.db'}"}


def _wait_for_redis(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer on port {port} within {timeout} s")


def _flush(url: str) -> None:
    """Empty the session's redis-server, so each test starts from nothing."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"FLUSHALL\r\n")
        conn.recv(64)
