"""Capacity: one gevent worker holds ten thousand idle connections with heartbeats flowing."""

from __future__ import annotations

import pytest
from conftest import Server, crowded, wait_for
from crowd import Crowd

COUNT = 10_000

pytestmark = crowded


@pytest.mark.slow
def test_gevent_worker_holds_ten_thousand_connections():
    """10,000 clients in 100 rooms on one gevent worker all get heartbeats (joins not counted), and all can leave."""
    server = Server(
        # The crowd reads nothing while it connects, so it cannot answer pings: keep them out of the way.
        "gevent", CHAT_HEARTBEAT_INTERVAL="1", CHAT_MAX_CONNECTIONS=str(COUNT + 50), CHAT_PING_INTERVAL="300",
        GUNICORN_CMD_ARGS=f"--worker-connections {COUNT + 100} --backlog 4096",
    )
    server.start()
    try:
        crowd = Crowd(server.port, "/ws?room=crowd-{group}", COUNT)
        # Deadlines that only bound a hang: on a loaded machine (CI's, other test workers) 10,000 take a while, and
        # the worker, busy with their heartbeats, took over 5 s to answer /healthz.
        wait_for(lambda: server.health(timeout=60)["connections"] == COUNT, 120, f"{COUNT} connections")
        crowd.pump(120, until=lambda: all(member.states[1] >= 3 for member in crowd.members))
        starved = [(number, dict(member.states), member.close_code) for number, member in enumerate(crowd.members)
                   if member.states[1] < 3]
        assert not starved, f"{len(starved)} clients got fewer than 3 heartbeats (number, states, close): {starved[:5]}"
        crowd.close(clean=False)
        wait_for(lambda: server.health(timeout=60)["connections"] == 0, 120, "every client to be removed")
    finally:
        server.stop()
