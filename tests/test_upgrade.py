"""Handshakes the workers answer themselves: what they take, what they leave to Flask, and that both paths agree."""

from __future__ import annotations

import re
import socket
import urllib.request
from types import SimpleNamespace

import pytest
from conftest import Server, wait_for
from flask import Flask, request_started
from flask.sessions import SecureCookieSessionInterface
from gunicorn.config import Config
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Request as WerkzeugRequest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection
from wsproto.events import Request as WSRequest

from chat import Chat, create_app, upgrade, wire, worker, ws

LIMITS = upgrade.Limits()
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: What Chromium sends to open a WebSocket, less its cookies.
BROWSER = [
    ("Host", "127.0.0.1:8000"),
    ("Connection", "Upgrade"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"),
    ("Upgrade", "websocket"),
    ("Origin", "http://127.0.0.1:8000"),
    ("Sec-WebSocket-Version", "13"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Sec-WebSocket-Key", KEY),
    ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
]
TOKEN = "handshakes-counted-here"


def head(target: str = "/ws?v=2&room=lobby", headers: list[tuple[str, str]] = BROWSER, line: str = "") -> bytes:
    first = line or f"GET {target} HTTP/1.1"
    return (first + "\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n").encode("latin-1")


def parse(data: bytes, secure: dict[str, str] | None = None) -> upgrade.Upgrade | None:
    return upgrade.parse(data, "127.0.0.1", "/ws", LIMITS, secure or {})


def without(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in BROWSER if n != name]


def replaced(name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n == name else v) for n, v in BROWSER]


def test_a_browser_handshake_is_taken_with_its_query_headers_and_peer():
    up = parse(head("/ws?v=2&room=lobby&name=Ma%C3%AFa&room=second"))
    assert up is not None
    query = "v=2&room=lobby&name=Ma%C3%AFa&room=second"
    assert (up.path, up.query, up.peer, up.scheme) == ("/ws", query, "127.0.0.1", "http")
    assert up.args == {"v": "2", "room": "lobby", "name": "Maïa"}
    assert up.headers["origin"] == "http://127.0.0.1:8000"
    assert up.headers["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits"


def test_the_answer_is_rfc_6455s_and_the_same_bytes_wsproto_sends():
    up = parse(head())
    assert up.accept() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )
    assert up.accept() == through_flask(head())


@pytest.mark.parametrize(
    "data",
    [
        head(line="POST /ws HTTP/1.1"),
        head(line="get /ws HTTP/1.1"),
        head(line="GET /ws HTTP/1.0"),
        head(line="GET  /ws HTTP/1.1"),
        head("/ws/"),
        head("/w%73"),
        head("/other"),
        head("http://127.0.0.1:8000/ws"),
        head("/ws#fragment"),
        head(headers=without("Host")),
        head(headers=without("Sec-WebSocket-Key")),
        head(headers=without("Upgrade")),
        head(headers=replaced("Upgrade", "h2c")),
        head(headers=replaced("Connection", "keep-alive")),
        head(headers=replaced("Sec-WebSocket-Version", "8")),
        head(headers=[*BROWSER, ("Content-Length", "5")]),
        head(headers=[*BROWSER, ("Transfer-Encoding", "chunked")]),
        head(headers=[*BROWSER, ("Expect", "100-continue")]),
        head(headers=[*BROWSER, ("Origin", "http://127.0.0.1:8000")]),
        head(headers=[*BROWSER, ("X_Forwarded_For", "10.0.0.1")]),
        head(headers=[*BROWSER, ("Bad Name", "x")]),
        head(headers=[*BROWSER, ("X-Name ", "x")]),
        head(headers=[*BROWSER, ("X-Folded", "a\r\n b")]),
        head(headers=[*BROWSER, ("X-Latin", "caf\xe9")]),
        head(headers=[*BROWSER, ("X-Long", "x" * LIMITS.field_size)]),
        head(headers=BROWSER + [(f"X-{i}", "x") for i in range(LIMITS.fields)]),
        head("/ws?" + "a" * LIMITS.line),
        head(headers=replaced("Host", "a" * 64)),
        head(headers=replaced("Host", ".example")),
        head(headers=replaced("Host", "a..b:8000")),
        head(headers=replaced("Host", "xn--zz")),
        head(headers=replaced("Host", "chat example")),
        head().replace(b"\r\n", b"\n"),
        head().replace(b"Host: ", b"Host:\r"),
        head()[:-2],
    ],
    ids=lambda data: data.split(b"\r\n")[0][:40].decode("latin-1"),
)
def test_anything_but_a_plain_handshake_is_left_to_flask(data):
    assert parse(data) is None


def test_connection_and_upgrade_are_read_as_tokens_in_any_case():
    headers = replaced("Connection", "keep-alive, UPGRADE")
    assert parse(head(headers=[(n, "WebSocket" if n == "Upgrade" else v) for n, v in headers])) is not None


def test_the_scheme_is_what_gunicorn_lets_the_peer_say():
    secure = {"X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}
    assert parse(head(headers=[*BROWSER, ("X-Forwarded-Proto", "https")]), secure).scheme == "https"
    assert parse(head(headers=[*BROWSER, ("X-Forwarded-Proto", "http")]), secure).scheme == "http"
    assert parse(head(headers=[*BROWSER, ("X-Forwarded-Proto", "https")])).scheme == "http"
    both = [*BROWSER, ("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "off")]
    assert parse(head(headers=both), secure) is None
    # gunicorn looks the headers up by upper-case name: a key in another case never matches.
    mixed = {"X-Forwarded-Proto": "https"}
    assert parse(head(headers=[*BROWSER, ("X-Forwarded-Proto", "https")]), mixed).scheme == "http"


@pytest.mark.parametrize(("allowed", "peer", "trusted"), [
    ("127.0.0.1,::1", "127.0.0.1", True),
    ("0:0:0:0:0:0:0:1", "::1", True),
    ("10.0.0.0/8", "10.1.2.3", True),
    ("10.0.0.0/8", "192.168.0.1", False),
    ("*", "203.0.113.7", True),
    ("127.0.0.1", "203.0.113.7", False),
])
def test_scheme_headers_are_trusted_from_the_peers_gunicorn_trusts(allowed, peer, trusted):
    cfg = Config()
    cfg.set("forwarded_allow_ips", allowed)
    found = worker.secure_headers(cfg, worker.forwarders(cfg), peer)
    assert found == (cfg.secure_scheme_headers if trusted else {})
    req = Request(cfg, IterUnreader([head(headers=[*BROWSER, ("X-Forwarded-Proto", "https")])]), (peer, 5000), 1)
    assert req.scheme == ("https" if trusted else "http")


@pytest.mark.parametrize(("setting", "value"), [
    ("limit_request_line", 0), ("limit_request_line", 16000), ("limit_request_line", 100),
    ("limit_request_fields", 0), ("limit_request_fields", 50000), ("limit_request_fields", 3),
    ("limit_request_field_size", 0), ("limit_request_field_size", 200),
])
def test_request_limits_are_read_as_gunicorn_reads_them(setting, value):
    cfg = Config()
    cfg.set(setting, value)
    limits = upgrade.Limits.of(cfg)
    req = Request(cfg, IterUnreader([head(headers=[("Host", "a")])]), ("127.0.0.1", 5000), 1)
    line = req.limit_request_line or 1 << 20
    assert (limits.line, limits.fields, limits.field_size) == (
        line, req.limit_request_fields, req.limit_request_field_size,
    )


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"), max_size=60))
def test_query_parameters_are_decoded_as_flask_decodes_them(query):
    up = parse(head("/ws?" + query))
    assert up is not None
    flask_args = WerkzeugRequest({"QUERY_STRING": query}).args
    assert up.args == {name: flask_args.get(name) for name in flask_args}


NAMES = [
    "Host", "Connection", "Upgrade", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Origin", "X-Any", "Content-Length",
]
header = st.tuples(
    st.one_of(st.sampled_from(NAMES), st.sampled_from(NAMES).map(str.lower), st.text(min_size=1, max_size=8)),
    st.one_of(
        st.sampled_from([
            "Upgrade", "websocket", "13", KEY, "127.0.0.1", "keep-alive, Upgrade", "", " x ", "0",
            "a" * 64, ".example", "xn--zz", "a..b", "[::1]:8000", "example.", "caf\xe9", "chat.example:80",
        ]),
        st.text(max_size=10),
    ),
)
request_line = st.one_of(
    st.sampled_from(["GET /ws HTTP/1.1", "GET /ws?v=2&room=a%20b HTTP/1.1", "GET /ws HTTP/1.0", "PUT /ws HTTP/1.1"]),
    st.text(max_size=20),
)
STANDALONE = create_app({"STORE_URL": "none"})


class Unused:
    """The socket gunicorn puts in the environ, which nothing here reads or writes."""


def through_flask(data: bytes) -> bytes:
    """Serve a head the way gunicorn, Flask and simple-websocket would, up to the 101; return the 101's bytes."""
    cfg = Config()
    req = Request(cfg, IterUnreader([data]), ("127.0.0.1", 5000), 1)
    _, environ = gunicorn_wsgi.create(req, Unused(), ("127.0.0.1", 5000), ("127.0.0.1", 8000), cfg)
    with STANDALONE.request_context(environ) as context:
        assert context.request.routing_exception is None
        assert context.request.url_rule.endpoint == "chat_ws.chat_socket"
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
    # simple-websocket hands wsproto a request it rebuilds from the environ's headers.
    rebuilt = "GET / HTTP/1.1\r\n" + "".join(
        f"{'-'.join(part.capitalize() for part in key[5:].split('_'))}: {value}\r\n"
        for key, value in environ.items() if key.startswith("HTTP_")
    ) + "\r\n"
    handshake = WSConnection(ConnectionType.SERVER)
    handshake.receive_data(rebuilt.encode("latin-1"))
    events = list(handshake.events())
    assert [type(event) for event in events] == [WSRequest]
    return handshake.send(AcceptConnection())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(request_line, st.lists(header, max_size=12), st.booleans())
def test_whatever_the_worker_takes_gunicorn_flask_and_wsproto_take_the_same_way(line, headers, canonical):
    """A head the worker answers itself parses in gunicorn to the same request, routes in Flask to the chat's
    socket, is accepted by wsproto as simple-websocket hands it over, and gets the same 101, byte for byte."""
    if canonical:
        headers = BROWSER + headers
    try:
        data = head(headers=headers, line=line)
    except UnicodeEncodeError:
        return
    up = parse(data)
    if up is None:
        return
    req = Request(Config(), IterUnreader([data]), ("127.0.0.1", 5000), 1)
    assert (req.method, req.path, req.query, req.version) == ("GET", up.path, up.query, (1, 1))
    assert {name.lower(): value for name, value in req.headers} == up.headers
    assert len(req.headers) == len(up.headers)
    assert upgrade.from_request(req, "127.0.0.1", "/ws") == up
    assert through_flask(data) == up.accept()


@given(st.lists(header, max_size=6))
def test_what_gevent_takes_from_gunicorns_parse_it_takes_from_the_head_too(extra):
    """Under gevent the worker reads gunicorn's parsed request: it takes no more than from the raw head."""
    try:
        data = head(headers=BROWSER + extra)
        req = Request(Config(), IterUnreader([data]), ("127.0.0.1", 5000), 1)
    except Exception:
        return
    taken = upgrade.from_request(req, "127.0.0.1", "/ws")
    if taken is not None:
        assert parse(data) == taken


# Which apps the workers answer for.


def chat_app(**config: object) -> Flask:
    return create_app({"STORE_URL": "none", **config})


def test_the_standalone_app_and_a_prefixed_mount_are_answered_by_the_worker():
    assert ws.native_route(chat_app()).path == "/ws"
    host = Flask(__name__)
    Chat(host, url_prefix="/chat")
    host.config["CHAT_STORE_URL"] = "none"
    assert ws.native_route(host).path == "/chat/ws"


def hooked() -> Flask:
    app = chat_app()
    app.before_request(lambda: None)
    return app


def wrapped() -> Flask:
    app = chat_app()
    app.wsgi_app = ProxyFix(app.wsgi_app)
    return app


def identified() -> Flask:
    app = Flask(__name__)
    Chat(app).identify(lambda: None)
    return app


def named() -> Flask:
    app = chat_app()
    app.config["SERVER_NAME"] = "chat.example"
    return app


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (hooked, "before_request hook"),
        (wrapped, "wrapped"),
        (identified, "identify callback"),
        (lambda: chat_app(COMPRESSION=True), "compresses"),
        (named, "by host"),
        (lambda: ProxyFix(chat_app()), "not a Flask app"),
        (lambda: Flask(__name__), "no chat"),
    ],
)
def test_apps_where_flask_must_see_the_handshake_are_left_to_it(make, reason):
    with pytest.raises(ws.Unfit, match=reason):
        ws.native_route(make())


class OwnFlask(Flask):
    def preprocess_request(self):
        return super().preprocess_request()


def subclassed() -> Flask:
    app = OwnFlask(__name__)
    app.config["CHAT_STORE_URL"] = "none"
    Chat(app)
    return app


def trusting() -> Flask:
    app = chat_app()
    app.config["TRUSTED_HOSTS"] = ["chat.example"]
    return app


def subprotocols() -> Flask:
    app = Flask(__name__)
    app.config.update(CHAT_STORE_URL="none", SOCK_SERVER_OPTIONS={"subprotocols": ["chat.v1"]})
    app.config["SOCK_SERVER_OPTIONS"].update(wire.server_options())
    Chat(app)
    return app


def own_sessions() -> Flask:
    app = chat_app()
    app.session_interface = type("Sessions", (SecureCookieSessionInterface,), {})()
    return app


@pytest.mark.parametrize(
    ("make", "reason"),
    [(subclassed, "overrides Flask.preprocess_request"), (trusting, "TRUSTED_HOSTS"), (subprotocols, "subprotocols"),
     (own_sessions, "session interface")],
)
def test_an_app_that_would_do_more_for_a_request_keeps_handshakes_in_flask(make, reason):
    with pytest.raises(ws.Unfit, match=reason):
        ws.native_route(make())


@pytest.mark.parametrize(("setting", "value"), [("proxy_protocol", "v1"), ("protocol", "uwsgi")])
def test_gunicorn_speaking_more_than_http_keeps_handshakes_in_gunicorn(setting, value, caplog):
    cfg = Config()
    cfg.set(setting, value)
    assert worker.native_route(SimpleNamespace(cfg=cfg, wsgi=chat_app())) is None
    assert "more than plain HTTP/1" in caplog.text


def test_a_script_name_keeps_handshakes_in_gunicorn(monkeypatch, caplog):
    monkeypatch.setenv("SCRIPT_NAME", "/app")
    assert worker.native_route(SimpleNamespace(cfg=Config(), wsgi=chat_app())) is None
    assert "SCRIPT_NAME" in caplog.text


def test_the_route_reserves_a_place_and_leaves_what_the_hub_or_an_identify_callback_would_refuse():
    chat = Chat()
    app = Flask(__name__)
    app.config.update(CHAT_STORE_URL="none", CHAT_MAX_CONNECTIONS=1)
    chat.init_app(app)
    route = ws.native_route(app)
    up = parse(head(headers=without("Origin")))
    assert route.admit(up) == "127.0.0.1"
    assert route.chat.hub.count() == 1
    assert route.admit(up) is None, "a full server's refusal is the Flask route's to send"
    route.chat.hub.release("127.0.0.1")
    chat.identify(lambda: None)
    assert route.admit(up) is None, "an identify callback reads Flask's request"
    assert route.chat.hub.count() == 0


def test_a_listener_to_flasks_request_signals_keeps_handshakes_in_flask():
    app = chat_app()

    def listener(sender, **extra):
        pass

    request_started.connect(listener, app)
    try:
        with pytest.raises(ws.Unfit, match="signals"):
            ws.native_route(app)
    finally:
        request_started.disconnect(listener, app)
    assert ws.native_route(app).path == "/ws"


# Under gunicorn.


def handshakes(server: Server) -> dict[str, float]:
    request = urllib.request.Request(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    found = re.findall(r'chat_handshakes_total\{by="(\w+)"\} (\S+)', text)
    return {by: float(count) for by, count in found if float(count)}


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_the_worker_answers_the_chats_handshakes_itself(make_server, connect, kind):
    server = make_server(kind, CHAT_METRICS_TOKEN=TOKEN)
    assert "WebSocket handshakes to /ws are answered by the worker" in server.log()
    clients = [connect(server.ws_url + f"?v=2&room=native&name=n{i}") for i in range(10)]
    for each in clients:
        assert each.welcome()["event"] == "welcome"
    clients[0].send("hello")
    for each in clients:
        assert each.next_where(lambda frame: frame.get("state") == 2)["message"] == "hello"
    assert handshakes(server) == {"worker": 10.0}


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_a_head_the_worker_leaves_gets_flasks_answer(make_server, kind):
    """A handshake the worker does not take itself is still served, or refused, by the Flask route."""
    server = make_server(kind, CHAT_METRICS_TOKEN=TOKEN)
    port = server.port
    here = [(n, {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}.get(n, v)) for n, v in BROWSER]
    evil = [(n, "https://evil.example" if n == "Origin" else v) for n, v in here]
    tries = {
        "no key": (head(headers=[(n, v) for n, v in here if n != "Sec-WebSocket-Key"]), b"HTTP/1.1 400 "),
        "origin": (head(headers=evil), b"HTTP/1.1 403 "),
        "doubled": (head(headers=[*here, ("X-Twice", "a"), ("X-Twice", "b")]), b"HTTP/1.1 101 "),
    }
    for name, (data, status) in tries.items():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(data)
            answer = wait_for(lambda: raw.recv(4096), 5, f"an answer to {name}")
            assert answer.startswith(status), (name, answer[:80])
    wait_for(lambda: handshakes(server).get("flask") == 1.0, 5, "the Flask route's handshake counted")
    assert "worker" not in handshakes(server)


@pytest.mark.parametrize("kind", ["gthread", "gevent"])
def test_a_full_server_refuses_through_flask_with_1013(make_server, connect, kind):
    server = make_server(kind, CHAT_METRICS_TOKEN=TOKEN, CHAT_MAX_CONNECTIONS="2")
    first, second = connect(server.ws_url + "?v=2"), connect(server.ws_url + "?v=2")
    first.welcome(), second.welcome()
    assert connect(server.ws_url + "?v=2").close_code() == 1013
    second.close()
    wait_for(lambda: server.health()["connections"] == 1, 5, "the second client's place given back")
    connect(server.ws_url + "?v=2").welcome()
    assert handshakes(server) == {"worker": 3.0, "flask": 1.0}


def test_a_host_app_with_a_request_hook_sees_every_handshake(make_server, connect):
    server = make_server(target="hooked_app:app", CHAT_METRICS_TOKEN=TOKEN)
    assert "WebSocket handshakes go through Flask: a before_request hook would run for it" in server.log()
    first, second = connect(server.ws_url + "?v=2&room=hooked"), connect(server.ws_url + "?v=2&room=hooked")
    first.welcome(), second.welcome()
    first.send("through flask")
    assert second.next_where(lambda frame: frame.get("state") == 2)["message"] == "through flask"
    wait_for(lambda: server.log().count("host saw /ws") == 2, 5, "the host's hook to see both handshakes")
    assert handshakes(server) == {"flask": 2.0}


def test_an_access_log_leaves_the_worker_answering_as_it_logs_no_handshake_either_way(make_server, connect):
    server = make_server(CHAT_METRICS_TOKEN=TOKEN, GUNICORN_CMD_ARGS="--access-logfile -")
    assert "WebSocket handshakes to /ws are answered by the worker" in server.log()
    connect(server.ws_url + "?v=2").welcome()
    wait_for(lambda: handshakes(server) == {"worker": 1.0}, 5, "the handshake counted")
    wait_for(lambda: '"GET /metrics HTTP/1.1" 200' in server.log(), 5, "the access log to have the metrics request")


@pytest.mark.parametrize("hook", ["pre_request", "post_request"])
def test_a_gunicorn_request_hook_keeps_handshakes_in_gunicorn(hook, caplog):
    """gunicorn hands every request it serves to these hooks, the WebSocket handshake too: the worker leaves it them."""
    cfg = Config()
    cfg.set(hook, (lambda worker, req: None) if hook == "pre_request" else (lambda worker, req, environ, resp: None))
    assert worker.native_route(SimpleNamespace(cfg=cfg, wsgi=chat_app())) is None
    assert f"go through Flask: gunicorn has a {hook} hook" in caplog.text
    assert worker.native_route(SimpleNamespace(cfg=Config(), wsgi=chat_app())).path == "/ws"
