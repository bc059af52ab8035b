"""Outages the docs promise to ride out, at server level: a frozen Redis, a PostgreSQL store killed and
restarted, and a SIGTERM while messages are still arriving."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import urllib.request

import pytest
from conftest import Client, Server, wait_for
from postgres_server import PostgresServer
from redis_server import RedisServer
from wsclient import cid_frame


def history(server: Server, room: str) -> dict[str, str]:
    """Return {id: text} of every message the history API holds for room, paging through it."""
    kept: dict[str, str] = {}
    since = "0"
    while True:
        with urllib.request.urlopen(f"{server.url}/api/rooms/{room}/messages?since={since}&limit=200",
                                    timeout=10) as response:
            page = json.load(response)["messages"]
        if not page:
            return kept
        kept.update((m["id"], m["message"]) for m in page)
        since = page[-1]["id"]


def test_a_frozen_redis_tells_the_sender_its_message_may_not_have_been_sent(make_server, connect):
    """A message sent while redis-server is frozen (its command went out, no answer came) gets the notice that it
    may not have been sent, not that it was not sent; the connection stays open and works once Redis is back."""
    with RedisServer() as redis_server:
        server = make_server(CHAT_BACKEND_URL=redis_server.url, CHAT_RATE_LIMIT="off")
        client = connect(server.ws_url + "?room=frozen")
        client.welcome()
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            client.send("into the freeze")
            notice = client.next_where(lambda e: e["state"] == 4)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert notice["code"] == "unavailable"
        assert notice["message"] == "the chat did not answer in time: your message may not have been sent"
        wait_for(lambda: server.health()["status"] == "ok", 20, "/healthz to recover")
        client.send("after the thaw")
        assert client.next_where(lambda e: e["state"] == 2 and e["message"] == "after the thaw")


def test_a_postgresql_store_killed_and_restarted_loses_no_message(make_server, connect):
    """With the store's PostgreSQL killed, v1 messages still go out and are written once it is back; a v2 send is
    refused with unavailable (and acked when sent again later); /healthz says 503 meanwhile."""
    postgres = PostgresServer().start()
    try:
        server = make_server(CHAT_STORE_URL=postgres.url, CHAT_RATE_LIMIT="off")
        listener = connect(server.ws_url + "?room=pg")
        plain, acked = connect(server.ws_url + "?room=pg"), connect(server.ws_url + "?room=pg&v=2")
        for client in (listener, plain, acked):
            client.welcome()
        plain.send("before")
        listener.next_where(lambda e: e["state"] == 2 and e["message"] == "before")

        postgres.halt()
        plain.send("during")
        during = listener.next_where(lambda e: e["state"] == 2 and e["message"] == "during")
        wait_for(lambda: server.health()["store"] is False, 20, "/healthz to report the store down")
        assert server.health()["status"] == "unavailable"
        acked.send(cid_frame("acked during", "c1"))
        refused = acked.next_where(lambda e: e["state"] in (4, 5))
        assert (refused["state"], refused["code"], refused["cid"]) == (4, "unavailable", "c1")

        postgres.resume()
        wait_for(lambda: server.health()["status"] == "ok", 30, "/healthz to recover")
        acked.send(cid_frame("acked after", "c1"))
        assert acked.next_where(lambda e: e["state"] in (4, 5))["state"] == 5
        wait_for(lambda: during["id"] in history(server, "pg"), 20, "the queued message to be written")
        kept = history(server, "pg")
        assert [text for text in kept.values()] == ["before", "during", "acked after"]
    finally:
        postgres.stop()


@pytest.mark.parametrize("behind", [False, True], ids=["store-keeping-up", "store-behind"])
def test_sigterm_while_messages_arrive_loses_no_v1_message(make_server, own_store, behind):
    """SIGTERM while a v1 client sends flat out: every message a listener was sent is in the history after the
    restart. With the store behind (another process holds SQLite's write lock until every client is closed)
    the writer still commits all it queued, on its way out, before the worker exits."""
    server = make_server(CHAT_RATE_LIMIT="off")
    listener = Client(server.ws_url + "?room=term")
    sender = Client(server.ws_url + "?room=term")
    listener.welcome()
    sender.welcome()
    seen: list[str] = []
    stop = threading.Event()

    def send() -> None:
        number = 0
        while not stop.is_set():
            try:
                sender.send(f"v1 {number}")
            except OSError:
                return
            number += 1

    def read() -> None:
        try:
            while True:
                event = listener.next()
                if event["state"] == 2:
                    seen.append(event["id"])
        except Exception:
            return

    threads = [threading.Thread(target=send, name="term-sender"), threading.Thread(target=read, name="term-reader")]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(seen) >= 500, 20, "500 messages flowing")
        if behind:
            lock = sqlite3.connect(own_store, timeout=30, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            locked_at = len(seen)
            wait_for(lambda: len(seen) >= locked_at + 500, 20, "500 messages sent while the store is locked")
            server.process.send_signal(signal.SIGTERM)
            # Held until both clients are gone, the lock keeps the writer's queue for its last commits.
            wait_for(lambda: server.log().count("room=term code=1001") == 2, 20, "the clients to be closed")
            lock.execute("ROLLBACK")
            lock.close()
        assert server.stop() == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        listener.close()
        sender.close()
    server.start()
    missing = set(seen) - set(history(server, "term"))
    assert not missing, f"{len(missing)} of {len(seen)} messages sent out before SIGTERM were not stored"
