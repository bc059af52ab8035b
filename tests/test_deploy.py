"""Deployment: gunicorn.conf.py's guards, start-up messages and the backend's health."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from conftest import BIN, ROOT, Client, Server, free_port, on_each_worker, wait_for, worker_of
from redis_server import RedisServer

from chat.server.worker import TIMED_OUT


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
    """With Redis down /healthz is 503, senders are told their message was not sent, new connections are closed
    with 1013 (try again later); when it is back all is well."""
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
        assert notice["message"] == "the chat is unavailable: your message was not sent"
        assert connect(server.ws_url).close_code() == 1013
        redis_server.start()
        wait_for(lambda: server.health()["status"] == "ok", 20, "/healthz to recover")
        client.send("after redis is back")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "after redis is back"
    finally:
        redis_server.stop()


def test_metrics_are_summed_over_workers(make_server, connect, clean_redis_url):
    """With four clients placed on each of three workers, /metrics counts the connections and messages of all."""
    server = make_server(
        workers=3, CHAT_BACKEND_URL=clean_redis_url, CHAT_RATE_LIMIT="off", CHAT_METRICS_TOKEN="t" * 16
    )

    def welcomed(number: int) -> Client:
        client = connect(server.ws_url + "?room=counted")
        client.welcome()
        return client

    clients = on_each_worker(server, welcomed, per_worker=4)
    assert sorted({worker_of(server, client) for client in clients}) == sorted(server.worker_pids())
    for number, client in enumerate(clients):
        client.send(f"message {number}")
    for client in clients:
        client.chats(12)

    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": "Bearer " + "t" * 16})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read().decode()
    assert "chat_connections 12.0" in body
    assert "chat_messages_received_total 12.0" in body


def test_config_works_when_started_from_another_folder(tmp_path, connect):
    """gunicorn -c /path/gunicorn.conf.py --chdir /path app:app, run from elsewhere, serves the chat."""
    with Server("gthread", cwd=tmp_path) as server:
        assert server.command()[1:5] == ["-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(ROOT)]
        client = connect(server.ws_url + "?room=elsewhere")
        client.welcome()
        client.send("from another folder")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "from another folder"


def test_chat_mounted_in_wsgi_middleware_boots_and_shuts_down(connect):
    """Served inside DispatcherMiddleware, the chat works under its prefix and still closes with 1001 on SIGTERM."""
    server = Server("gthread", target="host_wsgi:application", health="/chat/healthz").start()
    try:
        with urllib.request.urlopen(server.url + "/", timeout=5) as response:
            assert response.read() == b"the host's own page"
        client = connect(f"ws://127.0.0.1:{server.port}/chat/ws?room=mounted")
        client.welcome()
        client.send("through the dispatcher")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "through the dispatcher"
        server.process.terminate()
        assert client.close_code() == 1001
    finally:
        server.stop()
    output = server.log()
    assert "AttributeError" not in output and "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_half_sent_requests_neither_starve_visitors_nor_stay(make_server, connect, kind):
    """While 1,100 clients hang mid-headers, /, /healthz and /ws answer; after the header timeout each gets 408
    (gthread) or is closed without an answer (gevent: gunicorn's own deadline)."""
    server = make_server(kind, CHAT_HEADER_TIMEOUT="3")
    hanging = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            hanging.append(sock)
        for path in ("/", "/healthz"):
            with urllib.request.urlopen(server.url + path, timeout=4) as response:
                assert response.status == 200
        client = connect(server.ws_url + "?room=besieged", timeout=4)
        client.welcome()
        client.send("still served")
        assert client.next_where(lambda e: e["state"] == 2)["message"] == "still served"
        for sock in hanging:
            sock.settimeout(20)
            answer = sock.recv(4096)
            assert answer == (TIMED_OUT if kind == "gthread" else b""), answer
    finally:
        for sock in hanging:
            sock.close()
