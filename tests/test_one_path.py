"""Every WebSocket the chat accepts was made by flask-sock's route, under every server, standalone and mounted."""

from __future__ import annotations

import pytest
from conftest import Server

CLIENTS = 5


@pytest.mark.parametrize(("target", "prefix"), [("counted_app:standalone", ""), ("counted_app:mounted", "/chat")])
@pytest.mark.parametrize("kind", ["dev", "gthread", "gevent"])
def test_every_accepted_socket_was_made_by_flask_socks_route(kind, target, prefix, tmp_path, connect):
    """Each welcomed client is one simple-websocket Server made by flask-sock's route at the chat's path, no more."""
    counts = tmp_path / "counts"
    counts.touch()
    server = Server(kind, target=target, health=f"{prefix}/healthz", CHAT_TEST_COUNTS=str(counts))
    server.start()
    try:
        for number in range(CLIENTS):
            client = connect(f"ws://127.0.0.1:{server.port}{prefix}/ws?room=counted&name=c{number}")
            assert client.welcome()["online"] == number + 1
        # Each app's start-up probe (chat.socket.probe) makes one handshake of its own, at /probe.
        made = [path for path in counts.read_text().splitlines() if path != "/probe"]
        assert made == [f"{prefix}/ws"] * CLIENTS
        assert server.health()["connections"] == CLIENTS
    finally:
        server.stop()

