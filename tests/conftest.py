"""Fixtures: the app, real servers on free ports, WebSocket clients, and CI's rule that nothing real is skipped.

The helpers themselves live in their own modules, one of each: served (Server, the one server starter),
wsclient (Client, RawClient, the frame codec), reconnecting (Resuming), tokens (mint), crowd (many raw
clients), redis_server and postgres_server. They are re-exported here for the tests that import them from
conftest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from missing import fail_instead_of_skip
from pages import browser, host_app_url, open_page  # noqa: F401  (the page's fixtures)
from ports import free_port
from reconnecting import Resuming
from redis_server import *  # noqa: F403  (the redis_url fixtures)
from served import BIN, PYTHON, ROOT, Server, answers, on_each_worker, proc_status, wait_for, worker_of
from wsclient import Client, Closed, close_code

from chat import create_app

__all__ = ["BIN", "PYTHON", "ROOT", "Client", "Closed", "Server", "answers", "close_code", "crowded", "free_port",
           "on_each_worker", "proc_status", "wait_for", "worker_of"]

#: Tests that drive hundreds or thousands of connections, or weigh a worker's memory: one xdist worker runs them
#: one after another, so that two never load the machine at once (the other workers run the rest beside them).
crowded = pytest.mark.xdist_group("crowds")

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    fail_instead_of_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    fail_instead_of_skip(outcome.get_result())


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


@pytest.fixture
def resuming() -> Iterator[Callable[..., Resuming]]:
    """Open reconnecting clients (to a Server or a ws:// URL), each returned once welcomed; closed after the test."""
    opened: list[Resuming] = []

    def open_client(server: Server | str, room: str, name: str, resume: bool = True, query: str = "") -> Resuming:
        url = server.ws_url if isinstance(server, Server) else server
        peer = Resuming(url, room, name, resume, query)
        opened.append(peer)
        peer.wait(lambda p: p.welcomed, 15, "the welcome")
        return peer

    yield open_client
    for peer in opened:
        peer.close()
