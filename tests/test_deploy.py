"""Deployment: gunicorn.conf.py's guards, start-up messages and the backend's health."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import BIN, ROOT, free_port, wait_for
from redis_server import RedisServer


def gunicorn_exit(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run gunicorn with the project's configuration and return how it ended."""
    environment = {**os.environ, **env}
    environment.pop("CHAT_BACKEND_URL", None)
    environment.pop("REDIS_URL", None)
    return subprocess.run(
        [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{free_port()}", *args, "app:app"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("-w", "2"), {}, "CHAT_BACKEND_URL"),
        ((), {"WEB_CONCURRENCY": "2"}, "CHAT_BACKEND_URL"),
        ((), {"CHAT_HEARTBEAT_INTERVAL": "often"}, "CHAT_HEARTBEAT_INTERVAL"),
    ],
    ids=["two-workers", "web-concurrency", "bad-setting"],
)
def test_start_up_refuses_with_a_message_naming_the_fix(args, env, said):
    """Several workers on the memory backend (-w or WEB_CONCURRENCY), or a bad setting, stop gunicorn and say why."""
    finished = gunicorn_exit(*args, **env)
    assert finished.returncode != 0
    assert said in finished.stderr


def test_start_up_prints_the_address_to_open(server):
    """The server prints the URL a person should open."""
    wait_for(lambda: "Chat is running: open http://127.0.0.1:" in server.log(), 5, "the address line")


def test_healthz_and_notices_follow_redis_going_away_and_back(make_server, connect):
    """With Redis down /healthz is 503 and senders get an unavailable notice; when it is back all is well."""
    redis_server = RedisServer().start()
    try:
        server = make_server(CHAT_BACKEND_URL=redis_server.url, CHAT_RATE_LIMIT="off")
        client = connect(server.ws_url)
        client.welcome()
        assert server.health()["backend"] is True
        redis_server.stop()
        wait_for(lambda: server.health()["status"] == "unavailable", 15, "/healthz to report the backend down")
        with pytest.raises(urllib.error.HTTPError) as down:
            urllib.request.urlopen(server.url + "/healthz", timeout=5)
        assert down.value.code == 503
        client.send("while redis is down")
        notice = client.next_where(lambda e: e["state"] == 4)
        assert notice["code"] == "unavailable"
        redis_server.start()
        wait_for(lambda: server.health()["status"] == "ok", 20, "/healthz to recover")
        client.send("after redis is back")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "after redis is back"
    finally:
        redis_server.stop()


def test_metrics_are_summed_over_workers(make_server, connect, clean_redis_url):
    """With three workers, /metrics counts the connections and messages of all of them."""
    server = make_server(workers=3, CHAT_BACKEND_URL=clean_redis_url, CHAT_RATE_LIMIT="off")
    clients = [connect(server.ws_url + "?room=counted") for _ in range(12)]
    for client in clients:
        client.welcome()
    for number, client in enumerate(clients):
        client.send(f"message {number}")
    for client in clients:
        client.chats(12)

    def scraped() -> str:
        with urllib.request.urlopen(server.url + "/metrics", timeout=5) as response:
            return response.read().decode()

    body = scraped()
    assert 'chat_connections{room="counted"} 12.0' in body
    assert "chat_messages_received_total 12.0" in body
