"""The chat as a guest: a host's own flask-sock route and SOCK_SERVER_OPTIONS work beside it, unchanged."""

from __future__ import annotations

import pytest
from conftest import Server

ECHOED = " ping_interval=20 thread=HostThread"


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_hosts_echo_route_and_options_work_before_and_during_chat_traffic(kind, connect):
    """The host's /echo keeps its options and echoes before, amid and after chat messages, which all arrive in order."""
    server = Server(kind, target="guest_app:app", health="/chat/healthz", CHAT_RATE_LIMIT="off")
    server.start()
    try:
        echo = connect(f"ws://127.0.0.1:{server.port}/echo")
        echo.ws.send("before")
        assert echo.ws.recv() == "before" + ECHOED
        sender = connect(f"ws://127.0.0.1:{server.port}/chat/ws?room=guest&name=sender")
        reader = connect(f"ws://127.0.0.1:{server.port}/chat/ws?room=guest&name=reader")
        sender.welcome()
        reader.welcome()
        for number in range(20):
            sender.send(f"chat {number}")
            echo.ws.send(f"amid {number}")
            assert echo.ws.recv() == f"amid {number}" + ECHOED
        assert [event["message"] for event in reader.chats(20)] == [f"chat {number}" for number in range(20)]
        late = connect(f"ws://127.0.0.1:{server.port}/echo")
        late.ws.send("after")
        assert late.ws.recv() == "after" + ECHOED
        assert server.health()["connections"] == 2
    finally:
        server.stop()
