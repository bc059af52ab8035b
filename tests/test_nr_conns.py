"""gunicorn's count of a gthread worker's connections stays exact across WebSockets served through Flask."""

from __future__ import annotations

import re
import urllib.request

from conftest import Server, wait_for

ROUNDS, AT_ONCE = 10, 10


def test_nr_conns_is_exact_after_100_websockets_opened_and_closed(connect):
    """After 90 admitted and 10 refused WebSockets come and go, a lone request finds exactly itself counted."""
    # A second -c wins: the test's configuration, which is the project's plus a hook.
    server = Server("gthread", args=["-c", "tests/counting.conf.py"], CHAT_RATE_LIMIT="off")
    server.start()
    try:
        for round_ in range(ROUNDS):
            clients = [connect(f"{server.ws_url}?room=counted&name=r{round_}c{n}") for n in range(AT_ONCE - 1)]
            refused = connect(f"{server.ws_url}?room=Not%20a%20room")
            for client in clients:
                client.welcome()
            assert refused.close_code() == 1008
            for number, client in enumerate(clients):
                # Some leave with a close frame, some drop the TCP connection.
                if number % 2:
                    client.close()
                else:
                    client.drop()
        wait_for(lambda: server.health()["connections"] == 0, 10, "every WebSocket to be gone")
        wait_for(lambda: counted_alone(server), 10, "a lone request to find nr_conns=1")
    finally:
        server.stop()


def counted_alone(server: Server) -> bool:
    """Make one request and tell whether the worker counted exactly one connection for it."""
    with urllib.request.urlopen(server.url + "/", timeout=5) as response:
        response.read()
    counts = re.findall(r"nr_conns=(-?\d+) before /$", server.log(), re.MULTILINE)
    return counts[-1] == "1"
