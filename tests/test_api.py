"""The HTTP API and its Python twin: post, history, presence, sign-out, idempotency, and Publisher over Redis."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import tokens
from conftest import ROOT, Client, Closed, Server, on_each_worker, wait_for
from flask import Flask
from redis_server import RedisServer, flushall
from served import Served
from tokens import API_KEY, SECRET
from wsclient import cid_frame

from chat import Chat

KEY = API_KEY


class Api:
    """Call a chat's HTTP API under /chat/api and return (status, JSON body, headers)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def __call__(
        self, method: str, path: str, body: object = None, key: str | None = KEY, raw: bytes | None = None,
        **headers: str,
    ) -> tuple[int, dict, dict]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{self.base}/chat/api{path}", data=data, method=method, headers=sent)
        try:
            # A post may wait for another with its Idempotency-Key (about 10 s): the deadline only bounds a hang.
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error), dict(error.headers)


@pytest.fixture
def chat_server(make_server) -> Callable[..., tuple[Server, Api, str]]:
    """Start the host app `hosts:api` under gunicorn with the API key and a token secret, and the given settings;
    return the server, an API caller and the socket URL."""

    def start(**settings: str) -> tuple[Server, Api, str]:
        server = make_server(target="hosts:api", health="/chat/healthz",
                             **{"CHAT_API_KEY": KEY, "CHAT_JWT_SECRET": SECRET, **settings})
        return server, Api(server.url), f"ws://127.0.0.1:{server.port}/chat/ws"

    return start


@pytest.fixture
def in_process() -> Iterator[Callable[..., tuple[Chat, str]]]:
    """Serve a host app in this process, for the Python API (chat.publish and the rest need the app object)."""
    served = Served()

    def start(**config: object) -> tuple[Chat, str]:
        app = Flask("host")
        app.config.update({"CHAT_API_KEY": KEY, "CHAT_JWT_SECRET": SECRET, **config})
        chat = Chat(app, url_prefix="/chat")
        return chat, served.serve(app).replace("http:", "ws:", 1) + "/chat/ws"

    yield start
    served.stop()


def mint(sub: str, rooms: list[str] | None = None) -> str:
    """Return a token for sub, named after it, valid for a minute."""
    return tokens.mint(sub, sub.title(), rooms)


def welcomed(client: Client) -> Client:
    """Return client once it is welcomed."""
    client.welcome()
    return client


def test_a_post_is_delivered_like_any_message(chat_server, connect):
    """POST answers 201 with id, room and ts, and the room's clients get that message as a state-2 frame."""
    _, api, ws = chat_server()
    listener = connect(ws + "?room=ops")
    listener.welcome()
    status, body, _ = api("POST", "/rooms/ops/messages", {"message": "Deploy finished", "name": "ci"})
    assert status == 201 and body["room"] == "ops"
    frame = listener.next_where(lambda e: e["state"] == 2)
    assert (frame["id"], frame["ts"], frame["name"]) == (body["id"], body["ts"], "ci")
    assert frame["message"] == "Deploy finished"
    listener.send("after it")
    assert int(listener.next_where(lambda e: e["state"] == 2)["id"]) > int(body["id"])


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_stored_message_has_the_ts_of_its_frame(chat_server, connect, request, backend):
    """The store keeps each message with the ts its frame went out with: sent by v1 and v2 clients, and posted."""
    settings = {"CHAT_RATE_LIMIT": "off"}
    if backend == "redis":
        settings["CHAT_BACKEND_URL"] = request.getfixturevalue("clean_redis_url")
    server, api, ws = chat_server(**settings)
    listener, plain, acked = connect(ws + "?room=ts"), connect(ws + "?room=ts"), connect(ws + "?room=ts&v=2")
    for client in (listener, plain, acked):
        client.welcome()
    count = 500
    for n in range(count):
        plain.send(f"v1 {n}")
        acked.send(cid_frame(f"v2 {n}", f"c{n}"))
    acks = [acked.next_where(lambda e: e["state"] == 5) for _ in range(count)]
    status, posted, _ = api("POST", "/rooms/ts/messages", {"message": "posted"})
    assert status == 201
    frames = {int(event["id"]): event["ts"] for event in listener.chats(2 * count + 1)}
    stored: dict[int, int] = {}

    def all_stored() -> bool:
        stored.clear()
        since = "0"
        # The writer commits in batches: a v1 message is in the history once its batch is.
        while page := api("GET", f"/rooms/ts/messages?since={since}&limit=200")[1]["messages"]:
            stored.update((int(m["id"]), m["ts"]) for m in page)
            since = page[-1]["id"]
        return len(stored) == len(frames)

    wait_for(all_stored, 20, "every message to be stored")
    assert stored == frames
    assert frames[int(posted["id"])] == posted["ts"]
    assert {int(ack["id"]) for ack in acks} <= set(stored)


@pytest.mark.parametrize(
    ("kwargs", "status", "said"),
    [
        ({"key": None}, 401, "Bearer"),
        ({"key": "wrong-key-0123456789abcdef"}, 401, "Bearer"),
        ({"path": "/rooms/Bad Room/messages"}, 400, "room"),
        ({"raw": b"not json"}, 400, "JSON object"),
        ({"body": ["a", "list"]}, 400, "JSON object"),
        ({"body": {"message": "   "}}, 400, "non-empty"),
        ({"body": {"message": 5}}, 400, "non-empty"),
        ({"body": {"message": "x" * 70_000}}, 413, "bytes"),
        ({"raw": b'{"message": "' + b"x" * 500_000 + b'"}'}, 413, "large"),
        ({"body": {"message": "hi", "name": "bell\x07"}}, 400, "name"),
        ({"Idempotency_Key": ""}, 400, "Idempotency-Key"),
        ({"Idempotency_Key": "k" * 256}, 400, "Idempotency-Key"),
    ],
    ids=["no-key", "wrong-key", "bad-room", "not-json", "not-an-object", "blank", "not-text", "too-big",
         "body-too-big", "bad-name", "empty-idempotency-key", "long-idempotency-key"],
)
def test_a_bad_post_gets_its_status_and_a_json_error(chat_server, kwargs, status, said):
    """A missing or wrong key is 401; a bad room, body, message or name 400; an oversize message or body 413."""
    _, api, _ = chat_server()
    path = kwargs.pop("path", "/rooms/ops/messages")
    kwargs.setdefault("body", {"message": "hello"})
    code, body, headers = api("POST", path.replace(" ", "%20"), **kwargs)
    assert code == status and said in body["error"], body
    if status == 401:
        assert headers["WWW-Authenticate"].startswith("Bearer")


def test_without_a_key_writes_and_sign_outs_are_not_there(chat_server):
    """With no CHAT_API_KEY the write and sign-out routes answer 404, with a JSON error that names the setting."""
    _, api, _ = chat_server(CHAT_API_KEY="")
    for method, path in (("POST", "/rooms/ops/messages"), ("DELETE", "/users/u1/connections")):
        code, body, _ = api(method, path, {"message": "hi"} if method == "POST" else None)
        assert code == 404 and "CHAT_API_KEY" in body["error"]


@pytest.mark.parametrize("store", ["default", "none"])
def test_a_retry_with_the_same_idempotency_key_is_delivered_once(chat_server, connect, store):
    """The same Idempotency-Key gets the same answer and one delivery; reused for another body it is 422."""
    _, api, ws = chat_server(**({"CHAT_STORE_URL": "none"} if store == "none" else {}))
    listener = connect(ws + "?room=ops")
    listener.welcome()
    first = api("POST", "/rooms/ops/messages", {"message": "once"}, Idempotency_Key="deploy-42")
    again = api("POST", "/rooms/ops/messages", {"message": "once"}, Idempotency_Key="deploy-42")
    assert first[0] == again[0] == 201 and first[1] == again[1]
    other = api("POST", "/rooms/ops/messages", {"message": "another"}, Idempotency_Key="deploy-42")
    assert other[0] == 422
    api("POST", "/rooms/ops/messages", {"message": "marker"})
    seen = [listener.next_where(lambda e: e["state"] == 2)["message"] for _ in range(2)]
    assert seen == ["once", "marker"]
    _, history, _ = api("GET", "/rooms/ops/messages")
    assert [m["message"] for m in history["messages"]] == ["once", "marker"]


def test_history_pages_with_since_and_limit(chat_server):
    """GET messages returns state-2 objects: the last limit, or the first limit after since; bad values are 400."""
    _, api, _ = chat_server()
    ids = [api("POST", "/rooms/log/messages", {"message": f"m{n}"})[1]["id"] for n in range(5)]
    _, last, _ = api("GET", "/rooms/log/messages?limit=2")
    assert [m["message"] for m in last["messages"]] == ["m3", "m4"]
    _, after, _ = api("GET", f"/rooms/log/messages?since={ids[1]}&limit=2")
    assert [m["id"] for m in after["messages"]] == ids[2:4]
    assert set(after["messages"][0]) >= {"state", "message", "id", "room", "name", "ts"}
    assert api("GET", "/rooms/log/messages?since=soon")[0] == 400
    assert api("GET", "/rooms/log/messages?limit=-1")[0] == 400


def test_presence_counts_who_is_online(chat_server, connect):
    """GET presence returns the online count and the names in the room."""
    _, api, ws = chat_server()
    for name in ("zoe", "yan"):
        connect(f"{ws}?room=here&name={name}").welcome()
    assert api("GET", "/rooms/here/presence")[1] == {"online": 2, "users": ["yan", "zoe"]}


def test_reads_are_open_to_the_key_and_to_whoever_may_join(chat_server):
    """With guests refused, reads need the key or a token for the room: none is 401, another room's token 403."""
    _, api, _ = chat_server(CHAT_ANONYMOUS="off")
    assert api("GET", "/rooms/ops/presence", key=None)[0] == 401
    assert api("GET", "/rooms/ops/presence")[0] == 200
    assert api("GET", "/rooms/ops/messages", key=mint("u1", ["ops"]))[0] == 200
    code, body, _ = api("GET", "/rooms/ops/messages", key=mint("u1", ["dev"]))
    assert code == 403 and "not allowed" in body["error"]
    for bad in (tokens.mint("u1", ttl=-60), tokens.mint("u1", secret="another-secret-0123456789abcdefghij"), "junk"):
        code, body, headers = api("GET", "/rooms/ops/messages", key=bad)
        assert code == 401 and body["error"], body


def test_delete_signs_the_user_out_of_every_connection(chat_server, connect):
    """DELETE /users/<id>/connections closes each of that user's sockets with 1008 "signed out", and only theirs."""
    _, api, ws = chat_server()
    tabs = [connect(f"{ws}?room={room}&token={mint('u1')}") for room in ("a", "b")]
    other = connect(f"{ws}?room=a&token={mint('u2')}")
    for client in (*tabs, other):
        client.welcome()
    assert api("DELETE", "/users/u1/connections")[:2] == (202, {"user": "u1"})
    for tab in tabs:
        with pytest.raises(Closed) as closed:
            tab.next_where(lambda e: False)
        assert (closed.value.code, closed.value.reason) == (1008, "signed out")
    other.send("still here")
    assert other.next_where(lambda e: e["state"] == 2)["message"] == "still here"


def test_the_python_api_does_what_the_http_api_does(in_process, connect):
    """chat.publish, history, presence and disconnect act on the mounted chat, outside any request."""
    chat, ws = in_process()
    listener = connect(f"{ws}?room=py&token={mint('u9')}")
    listener.welcome()
    sent = chat.publish("py", "from python", name="cron")
    frame = listener.next_where(lambda e: e["state"] == 2)
    assert (frame["id"], frame["name"]) == (sent["id"], "cron")
    assert [m["message"] for m in chat.history("py")] == ["from python"]
    assert chat.presence("py") == {"online": 1, "users": ["U9"]}
    assert chat.disconnect("u9") == 1
    assert listener.close_code() == 1008


def test_publisher_in_another_process_posts_through_redis(make_server, connect, clean_redis_url):
    """Publisher(redis_url).publish from a separate process reaches the clients of every worker, with its id."""
    server = make_server(workers=2, CHAT_BACKEND_URL=clean_redis_url)
    listeners = on_each_worker(server, lambda n: welcomed(connect(server.ws_url + "?room=deploys")), per_worker=2)
    script = "from chat import Publisher; print(Publisher(%r).publish('deploys', 'Deploy finished', name='ci'))"
    finished = subprocess.run(
        [sys.executable, "-c", script % clean_redis_url], cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    for listener in listeners:
        frame = listener.next_where(lambda e: e["state"] == 2)
        assert (frame["id"], frame["name"], frame["message"]) == (finished.stdout.strip(), "ci", "Deploy finished")


def test_what_a_publisher_posts_is_stored_and_outlives_a_restart(make_server, connect, clean_redis_url):
    """A Publisher's messages are in the store under their ids: replayed and paged after a restart that Redis forgot."""
    server = make_server(CHAT_BACKEND_URL=clean_redis_url)
    script = ("from chat import Publisher\n"
              "with Publisher(%r) as publisher:\n"
              "    print(*(publisher.publish('deploys', f'step {n}', name='ci') for n in range(3)))")
    finished = subprocess.run(
        [sys.executable, "-c", script % clean_redis_url], cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert finished.returncode == 0, finished.stderr
    ids = finished.stdout.split()
    server.stop()
    flushall(clean_redis_url)
    server.start()
    with urllib.request.urlopen(f"{server.url}/api/rooms/deploys/messages?limit=10", timeout=5) as response:
        page = json.load(response)
    assert [(m["id"], m["name"], m["message"]) for m in page["messages"]] == [
        (ids[n], "ci", f"step {n}") for n in range(3)]
    listener = connect(server.ws_url + "?room=deploys")
    listener.welcome()
    assert [m["id"] for m in listener.chats(3)] == ids


def test_the_api_posts_through_redis_to_every_worker(make_server, connect, clean_redis_url):
    """On two workers sharing Redis, a POST to either reaches every client, in one id order with theirs."""
    server = make_server(workers=2, CHAT_BACKEND_URL=clean_redis_url, CHAT_API_KEY=KEY)
    listeners = on_each_worker(server, lambda n: welcomed(connect(server.ws_url + "?room=shared")), per_worker=2)
    request = urllib.request.Request(
        f"{server.url}/api/rooms/shared/messages", data=json.dumps({"message": "posted"}).encode(),
        method="POST", headers={"Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        posted = json.load(response)
    for listener in listeners:
        assert listener.next_where(lambda e: e["state"] == 2)["id"] == posted["id"]


def test_an_idempotent_retry_on_another_host_is_delivered_once(make_server, connect, clean_redis_url):
    """Two hosts share Redis and the store: a POST retried on the other host gets the first answer, one delivery."""
    first, second = (make_server(CHAT_BACKEND_URL=clean_redis_url, CHAT_API_KEY=KEY) for _ in range(2))
    listener = connect(second.ws_url + "?room=ops")
    listener.welcome()

    def post(server, message: str, key: str | None = "deploy-7") -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {KEY}", **({"Idempotency-Key": key} if key else {})}
        request = urllib.request.Request(f"{server.url}/api/rooms/ops/messages", method="POST", headers=headers,
                                         data=json.dumps({"message": message, "name": "ci"}).encode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    sent = post(first, "deployed")
    assert post(second, "deployed") == sent and sent[0] == 201
    assert post(second, "something else")[0] == 422
    post(second, "marker", key=None)
    seen = [listener.next_where(lambda e: e["state"] == 2) for _ in range(2)]
    assert [(e["id"], e["message"]) for e in seen] == [(sent[1]["id"], "deployed"), (seen[1]["id"], "marker")]


def test_sign_out_reaches_every_host(make_server, connect, clean_redis_url):
    """A DELETE on one host closes the user's socket on another host that shares the Redis."""
    hosts = [make_server(CHAT_BACKEND_URL=clean_redis_url, CHAT_API_KEY=KEY, CHAT_JWT_SECRET=SECRET) for _ in range(2)]
    elsewhere = connect(f"{hosts[1].ws_url}?token={mint('u1')}")
    elsewhere.welcome()
    request = urllib.request.Request(
        f"{hosts[0].url}/api/users/u1/connections", method="DELETE", headers={"Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202
    assert elsewhere.close_code(timeout=10) == 1008
    wait_for(lambda: hosts[1].health()["connections"] == 0, 10, "the other host to drop the socket")


def test_a_post_while_redis_is_down_is_503(chat_server):
    """While the backend cannot be reached a post is answered 503 with a JSON error, and 201 once it is back."""
    with RedisServer() as redis_server:
        _, api, _ = chat_server(CHAT_BACKEND_URL=redis_server.url)
        assert api("POST", "/rooms/ops/messages", {"message": "before"})[0] == 201
        redis_server.stop()
        code, body, _ = api("POST", "/rooms/ops/messages", {"message": "while down"})
        assert code == 503 and "unavailable" in body["error"], body
        redis_server.start()
        wait_for(lambda: api("POST", "/rooms/ops/messages", {"message": "after"})[0] == 201, 20, "posts to work")


def post_together(api: Api, key: str) -> list[tuple[int, dict, dict]]:
    """Post the same message with the same Idempotency-Key twice at once; return both answers."""
    answers: list[tuple[int, dict, dict]] = []
    threads = [threading.Thread(target=lambda: answers.append(
        api("POST", "/rooms/ops/messages", {"message": "deploy"}, Idempotency_Key=key)), name=f"post-{n}")
        for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_without_a_store_a_retry_while_the_first_still_runs_is_409(chat_server):
    """With CHAT_STORE_URL=none, a post with the Idempotency-Key of one still running (held by a frozen Redis) is
    answered 409 at once; the first ends 503."""
    with RedisServer() as redis_server:
        _, api, _ = chat_server(CHAT_BACKEND_URL=redis_server.url, CHAT_STORE_URL="none")
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            answers = post_together(api, "held-1")
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
    assert sorted(code for code, _, _ in answers) == [409, 503], answers


@pytest.mark.slow
def test_with_a_store_a_retry_while_the_first_still_runs_waits_then_is_503(chat_server):
    """With a store, a post with the Idempotency-Key of one still running (held by a frozen Redis) waits for it
    instead of answering 409, and is 503 when it did not finish in time; neither was delivered."""
    with RedisServer() as redis_server:
        _, api, _ = chat_server(CHAT_BACKEND_URL=redis_server.url)
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            answers = post_together(api, "held-2")
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
    assert [code for code, _, _ in answers] == [503, 503], answers
    assert all("may not have been sent" in body["error"] for _, body, _ in answers), answers


def test_history_since_older_than_the_window_says_gap_and_missed(chat_server):
    """Without a store, ?since= older than CHAT_HISTORY_SIZE answers the window with gap and the missed count."""
    _, api, _ = chat_server(CHAT_STORE_URL="none", CHAT_HISTORY_SIZE="3")
    ids = [api("POST", "/rooms/short/messages", {"message": f"m{n}"})[1]["id"] for n in range(6)]
    code, body, _ = api("GET", f"/rooms/short/messages?since={ids[0]}")
    assert code == 200
    assert (body.get("gap"), body.get("missed")) == (True, 2)
    assert [m["message"] for m in body["messages"]] == ["m3", "m4", "m5"]
    _, inside, _ = api("GET", f"/rooms/short/messages?since={ids[2]}")
    assert "gap" not in inside and [m["message"] for m in inside["messages"]] == ["m3", "m4", "m5"]


def test_history_since_what_retention_removed_says_gap_with_missed_null(chat_server):
    """With the store's retention past ?since=, the answer has gap and missed null (the count is not known)."""
    _, api, _ = chat_server(CHAT_RETENTION="5", CHAT_RETENTION_INTERVAL="0.1", CHAT_HISTORY_SIZE="3")
    ids = [api("POST", "/rooms/kept/messages", {"message": f"m{n}"})[1]["id"] for n in range(12)]
    wait_for(lambda: len(api("GET", "/rooms/kept/messages?limit=200")[1]["messages"]) == 5, 20, "retention to run")
    code, body, _ = api("GET", f"/rooms/kept/messages?since={ids[0]}")
    assert code == 200 and body["gap"] is True and body["missed"] is None, body
    assert [m["message"] for m in body["messages"]][-1] == "m11"
