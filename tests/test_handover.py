"""After the handshake a connection lives on a greenlet or thread of its own, not the request's."""

from __future__ import annotations

import pytest
from conftest import Server, wait_for
from crowd import Crowd

CLIENTS = 40


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_open_connections_leave_the_servers_threads_and_greenlets_free(kind):
    """A worker with 6 threads (or 10 worker connections) holds 40 clients with heartbeats and still answers HTTP."""
    server = Server(
        kind, threads=6, CHAT_HEARTBEAT_INTERVAL="1", CHAT_MAX_CONNECTIONS=str(CLIENTS),
        GUNICORN_CMD_ARGS="--worker-connections 10",
    )
    server.start()
    try:
        crowd = Crowd(server.port, "/ws?room=handover-{group}", CLIENTS)
        wait_for(lambda: server.health()["connections"] == CLIENTS, 20, f"{CLIENTS} connections")
        served = lambda: all(m.states[3] >= 1 and m.states[1] >= 1 for m in crowd.members)  # noqa: E731
        crowd.pump(20, until=served)
        assert served(), "every client gets its welcome and a heartbeat"
        crowd.close()
        wait_for(lambda: server.health()["connections"] == 0, 20, "every client to be removed")
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_on_message_hook_runs_in_the_apps_context(kind, connect):
    """The host's on_message hook can use current_app though the request that opened the socket has ended."""
    server = Server(kind, target="handover_app:app")
    server.start()
    try:
        client = connect(server.ws_url + "?room=tagged")
        client.welcome()
        client.send("hello")
        assert client.chats(1)[0]["message"] == "handover: hello"
    finally:
        server.stop()
