"""Under gevent, a store call held up by the database holds up only its caller, not the worker's other clients."""

from __future__ import annotations

import sqlite3

import websocket
from conftest import Client
from test_exactly_once import frame


def answered(client: Client) -> bool:
    """Tell whether an ack or a notice (state 5 or 4) is among the frames already on client's socket."""
    client.ws.settimeout(0)
    try:
        while True:
            client.next()
    except (BlockingIOError, websocket.WebSocketTimeoutException):
        pass
    finally:
        client.ws.settimeout(10)
    return any(event["state"] in (4, 5) for event in client.events)


def test_a_commit_waiting_for_the_write_lock_does_not_stall_the_gevent_worker(make_server, connect, own_store):
    """A v2 claim waits on SQLite's write lock, held by another process; meanwhile chat and /healthz go on."""
    server = make_server("gevent", CHAT_RATE_LIMIT="off")
    listener = connect(server.ws_url + "?room=held")
    listener.welcome()
    talker = connect(server.ws_url + "?room=held")
    talker.welcome()
    waiter = connect(server.ws_url + "?room=held&v=2")
    waiter.welcome()
    holder = sqlite3.connect(own_store, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter.send(frame("claimed under the lock", "held-1"))
        for n in range(20):
            talker.send(f"ping {n}")
            assert listener.next_where(lambda e: e["state"] == 2)["message"] == f"ping {n}"
            assert server.health()["connections"] == 3
        # The claim is still waiting for the lock: the worker served the rest around it.
        assert not answered(waiter)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    answer = waiter.next_where(lambda e: e["state"] in (4, 5))
    if answer["state"] == 4:
        # The lock outlived SQLite's busy timeout: the claim failed, and a resend is sent once.
        waiter.send(frame("claimed under the lock", "held-1"))
        answer = waiter.next_where(lambda e: e["state"] == 5)
    assert answer["state"] == 5 and answer["ack"] == "held-1"
    assert listener.next_where(lambda e: e["state"] == 2)["id"] == answer["id"]
