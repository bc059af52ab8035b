"""What a public deployment needs: origins, limits, graceful restarts, metrics and logs."""

from __future__ import annotations

import signal
import time
import urllib.request

import pytest
import websocket
from conftest import Server, crowded, wait_for
from crowd import Crowd

METRICS_TOKEN = "scrape-me-0123456789"


@pytest.fixture(scope="module")
def guarded():
    """Start a server with default origin rules and a small rate limit."""
    server = Server("gthread", CHAT_RATE_LIMIT="5,5", CHAT_MAX_CONNECTIONS_PER_IP="100000").start()
    yield server
    server.stop()


def test_own_origin_is_allowed(guarded, connect):
    """A page from the server's own origin may connect."""
    client = connect(guarded.ws_url, origin=guarded.url)
    assert client.next()["event"] == "welcome"


def test_missing_origin_is_allowed(guarded, connect):
    """Clients that send no Origin (command-line tools) may connect."""
    client = connect(guarded.ws_url, suppress_origin=True)
    assert client.next()["event"] == "welcome"


def test_foreign_origin_is_refused_with_403_and_never_joins(guarded, connect):
    """A page from another origin gets 403 and nobody sees it join."""
    watcher = connect(guarded.ws_url + "?room=origins")
    watcher.next()
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(guarded.ws_url + "?room=origins", origin="https://evil.example", timeout=5)
    assert refused.value.status_code == 403
    watcher.send("after the attempt")
    assert watcher.next()["state"] == 2
    assert not any(e.get("event") == "join" for e in watcher.events)


def test_allowed_origins_list_and_trusted_proxy(make_server, connect):
    """CHAT_ALLOWED_ORIGINS admits listed origins; behind a trusted proxy the forwarded origin counts."""
    server = make_server(CHAT_ALLOWED_ORIGINS="https://chat.example", CHAT_TRUST_PROXY="on")
    assert connect(server.ws_url, origin="https://chat.example").next()["event"] == "welcome"
    proxied = connect(
        server.ws_url, origin="https://app.example",
        header=["X-Forwarded-Proto: https", "X-Forwarded-Host: app.example"],
    )
    assert proxied.next()["event"] == "welcome"
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(server.ws_url, origin="https://other.example", timeout=5)


def test_rate_limit_notice_then_close_on_flood(make_server, connect):
    """Over the rate a client gets a rate_limited notice; a flood is closed with 1008; others (elsewhere) are fine."""
    server = make_server(CHAT_RATE_LIMIT="5,5", CHAT_TRUST_PROXY="on")
    bystander = connect(server.ws_url + "?room=flood", header=["X-Forwarded-For: 192.0.2.1"])
    flooder = connect(server.ws_url + "?room=flood", header=["X-Forwarded-For: 192.0.2.2"])
    for number in range(10):
        flooder.send(f"burst {number}")
    notice = flooder.next_where(lambda e: e["state"] == 4)
    assert notice["code"] == "rate_limited"
    for number in range(400):
        try:
            flooder.send(f"flood {number}")
        except (OSError, websocket.WebSocketException):
            break
    assert flooder.close_code() == 1008
    bystander.send("calm")
    assert bystander.next_where(lambda e: e["state"] == 2 and e["message"] == "calm")


def test_per_address_limit(make_server, connect):
    """Past CHAT_MAX_CONNECTIONS_PER_IP the next connection from that address gets 1008."""
    server = make_server(CHAT_MAX_CONNECTIONS_PER_IP="2")
    first, second = connect(server.ws_url), connect(server.ws_url)
    assert first.next()["event"] == second.next()["event"] == "welcome"
    third = connect(server.ws_url)
    assert third.close_code() == 1008
    second.close()
    wait_for(lambda: server.health()["connections"] == 1, 5, "a place to free up")
    assert connect(server.ws_url).next()["event"] == "welcome"


def test_metrics_count_traffic_and_closes(make_server, connect):
    """After traffic, /metrics shows connections, messages, deliveries and closes by code."""
    server = make_server(CHAT_RATE_LIMIT="off", CHAT_METRICS_TOKEN=METRICS_TOKEN)
    one, two = connect(server.ws_url), connect(server.ws_url)
    one.send("counted")
    two.next_where(lambda e: e["state"] == 2)
    two.ws.send_binary(b"x")
    assert two.close_code() == 1003
    wait_for(lambda: server.health()["connections"] == 1, 5, "the binary sender to go")
    body = scrape(server)
    assert "chat_connections 1.0" in body
    assert 'chat_rooms{size="1"} 1.0' in body
    assert "chat_messages_received_total 1.0" in body
    assert 'chat_closes_total{code="1003"} 1.0' in body
    deliveries = [line for line in body.splitlines() if line.startswith("chat_deliveries_total")]
    assert float(deliveries[0].split()[1]) >= 2


def test_metrics_do_not_grow_with_the_rooms_clients_open(make_server, connect):
    """Rooms opened one after another leave no series behind: /metrics never names a room."""
    server = make_server(CHAT_METRICS_TOKEN=METRICS_TOKEN)
    connect(server.ws_url + "?room=first").welcome()
    for number in range(301):
        if number == 1:
            before = scrape(server).splitlines()
        client = connect(server.ws_url + f"?room=secret-{number}")
        client.welcome()
        client.close()
        wait_for(lambda: server.health()["connections"] == 1, 10, "the visitor to leave")
    body = scrape(server)
    assert "secret-" not in body and "first" not in body
    assert len(body.splitlines()) == len(before)
    assert 'chat_rooms{size="1"} 1.0' in body


def scrape(server) -> str:
    """Return the /metrics body, fetched with the bearer token."""
    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def test_connect_and_disconnect_are_logged_without_text(make_server, connect):
    """One line per connect and disconnect, with address, room, code and duration, never the text."""
    server = make_server()
    client = connect(server.ws_url + "?room=logged")
    client.send("secret words")
    client.next_where(lambda e: e["state"] == 2)
    client.close()
    wait_for(lambda: "disconnect" in server.log(), 5, "the disconnect line")
    log = server.log()
    assert "connect '127.0.0.1' room=logged" in log
    assert "disconnect '127.0.0.1' room=logged code=1000 duration=" in log
    assert "secret words" not in log


@crowded
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_sigterm_closes_a_thousand_clients_with_1001(kind):
    """On SIGTERM every one of 1000 clients gets 1001 and the worker exits cleanly."""
    server = Server(kind, threads=1100, CHAT_MAX_CONNECTIONS="1100")
    server.start()
    try:
        crowd = Crowd(server.port, "/ws?room=shutdown", 1000)
        wait_for(lambda: server.health()["connections"] == 1000, 30, "1000 connections")
        crowd.pump(1.0)
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        crowd.pump(30, until=crowd.all_closed)
        took = time.monotonic() - started
        assert crowd.codes() == {1001: 1000}, crowd.codes()
        print(f"\nshutdown ({kind}): 1000 clients closed with 1001 in {took:.2f} s")
        server.process.wait(15)
        assert server.process.returncode == 0
        assert "Traceback" not in server.log()
        crowd.close()
    finally:
        server.stop()
