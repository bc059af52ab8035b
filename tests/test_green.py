"""Under gevent, a store call held up by the database holds up only its caller, not the worker's other clients."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.request

import pytest
import websocket
from conftest import Client, wait_for
from postgres_server import clean_postgres_url, postgres_url  # noqa: F401  (fixtures)
from wsclient import cid_frame as frame


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


def three(connect, url: str) -> tuple[Client, Client, Client]:
    """Return a listener and a talker (v1), and a v2 waiter, all welcomed into url's room."""
    clients = (connect(url), connect(url), connect(url + "&v=2"))
    for client in clients:
        client.welcome()
    return clients


def test_a_commit_waiting_for_the_write_lock_does_not_stall_the_gevent_worker(make_server, connect, own_store):
    """A v2 claim waits on SQLite's write lock, held by another process; meanwhile chat and /healthz go on."""
    server = make_server("gevent", CHAT_RATE_LIMIT="off")
    listener, talker, waiter = three(connect, server.ws_url + "?room=held")
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


@pytest.mark.parametrize("wait", ["gevent", "c"])
def test_reads_and_claims_waiting_on_postgresql_locks_do_not_stall_the_gevent_worker(
    make_server, connect, request, wait,
):
    """A page read and a v2 claim wait on tables another session locked; chat and /healthz go on.

    psycopg waits through gevent, or in its C wait (which blocks whatever thread
    calls it) when told to, or when it was imported before gevent patched select.
    """
    psycopg = pytest.importorskip("psycopg")
    database = request.getfixturevalue("clean_postgres_url")
    chosen = {"PSYCOPG_WAIT_FUNC": "wait_c"} if wait == "c" else {}
    server = make_server("gevent", CHAT_RATE_LIMIT="off", CHAT_STORE_URL=database, **chosen)
    listener, talker, waiter = three(connect, server.ws_url + "?room=held")
    pages: list[dict] = []

    def read_page() -> None:
        with urllib.request.urlopen(server.url + "/api/rooms/held/messages?limit=5", timeout=30) as response:
            pages.append(json.load(response))

    reader = threading.Thread(target=read_page, name="test-page-reader")
    with psycopg.connect(database, autocommit=True) as holder, \
            psycopg.connect(database, autocommit=True) as watcher:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE chat_messages, chat_claims IN ACCESS EXCLUSIVE MODE")
        try:
            reader.start()
            waiter.send(frame("claimed under the lock", "held-1"))
            wait_for(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'chat-store'"
                " AND wait_event_type = 'Lock'").fetchone()[0] == 2, 10, "the page read and the claim to wait")
            for n in range(20):
                talker.send(f"ping {n}")
                assert listener.next_where(lambda e: e["state"] == 2)["message"] == f"ping {n}"
                assert server.health()["connections"] == 3
            assert not answered(waiter) and not pages
        finally:
            holder.execute("ROLLBACK")
        reader.join(30)
    assert pages and len(pages[0]["messages"]) == 5
    answer = waiter.next_where(lambda e: e["state"] == 5)
    assert answer["ack"] == "held-1"
    assert listener.next_where(lambda e: e["state"] == 2)["id"] == answer["id"]
