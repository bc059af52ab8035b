"""The Flask extension: Chat(app, url_prefix=...), init_app, settings, and what it leaves to the host."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable

import pytest
from conftest import ROOT
from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from chat import Chat, ConfigError, create_app

Serve = Callable[[Flask], str]


def host_app(**config: object) -> Flask:
    """Return a host app with its own page, before any chat is mounted on it."""
    app = Flask("host")
    app.config.update(config)

    @app.get("/")
    def home() -> str:
        return "the host's own page"

    return app


def test_two_apps_in_one_process_keep_their_prefixes_and_settings(make_server, connect):
    """Two apps with chats at /a and /b, served by one gunicorn worker (tests/hosts.py:two_apps), keep separate
    rooms, and each replays as many messages as its app.config says."""
    server = make_server(target="hosts:two_apps", health="/a/healthz")
    base = f"ws://127.0.0.1:{server.port}"
    urls = {"a": base + "/a/ws", "b": base + "/other/b/ws"}
    for prefix, url in urls.items():
        sender = connect(url)
        sender.welcome()
        for number in range(3):
            sender.send(f"{prefix}{number}")
        sender.chats(3)
    for prefix, url in urls.items():
        late = connect(url)
        late.welcome()
        expected = {"a": ["a2"], "b": ["b0", "b1", "b2"]}[prefix]
        assert [event["message"] for event in late.chats(len(expected))] == expected
        late.send("mark")
        assert late.next_where(lambda e: e["state"] == 2)["message"] == "mark"


def test_factory_with_init_app_keeps_each_app_apart(tmp_path):
    """One Chat() mounted by init_app in two apps publishes and reads in the app whose context is active."""
    chat = Chat()

    def make(store: str) -> Flask:
        app = host_app(CHAT_STORE_URL=f"sqlite:///{tmp_path / store}")
        chat.init_app(app)
        return app

    first, second = make("first.db"), make("second.db")
    try:
        with first.app_context():
            chat.publish("lobby", "only in the first")
        with first.app_context():
            assert [m["message"] for m in chat.history("lobby")] == ["only in the first"]
        with second.app_context():
            assert chat.history("lobby") == []
        with pytest.raises(RuntimeError, match="several apps"):
            chat.history("lobby")
    finally:
        for app in (first, second):
            app.extensions["chat"].hub.stop()


def test_host_routes_and_responses_are_untouched():
    """The host's / is its own, no chat route answers outside the prefix, and host responses get no chat headers."""
    app = host_app()
    Chat(app, url_prefix="/chat")
    client = app.test_client()
    home = client.get("/")
    assert home.data == b"the host's own page"
    assert "X-Content-Type-Options" not in home.headers and "Content-Security-Policy" not in home.headers
    for path in ("/ws", "/healthz", "/api/rooms/lobby/presence", "/static/chat.js"):
        assert client.get(path).status_code == 404, path
    page = client.get("/chat/")
    assert page.status_code == 200 and page.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/chat/static/chat.js").status_code == 200


def test_page_under_a_prefix_points_at_its_own_socket_and_files():
    """The page at /chat/ names /chat/ws as its socket and loads its files from /chat/static; behind a mount too."""
    app = host_app()
    Chat(app, url_prefix="/chat")
    html = app.test_client().get("/chat/").data.decode()
    assert 'data-socket="/chat/ws"' in html
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == [
        "/chat/static/chat.css", "/chat/static/favicon.svg", "/chat/static/chat.js",
    ]
    mounted = Flask("outer")
    mounted.wsgi_app = DispatcherMiddleware(mounted.wsgi_app, {"/site": app})
    assert 'data-socket="/site/chat/ws"' in mounted.test_client().get("/site/chat/").data.decode()


def test_beside_the_apps_own_static_files_the_page_loads_its_own(tmp_path):
    """Mounted at the root of a Flask app that serves /static itself, the chat's files go under /static/chat: the
    page loads them, and the app's own /static files are still its own."""
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("body {}")
    app = Flask("host", root_path=str(tmp_path))
    Chat(app)
    client = app.test_client()
    files = re.findall(r'(?:src|href)="([^"]+)"', client.get("/").data.decode())
    assert files == ["/static/chat/chat.css", "/static/chat/favicon.svg", "/static/chat/chat.js"]
    for path in files:
        assert client.get(path).status_code == 200, path
    assert client.get("/static/site.css").data == b"body {}"


def test_a_chat_route_the_app_already_serves_is_named_in_a_warning():
    """Mounted at the root of an app with its own /, the chat says its page there is never reached."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("chat.web.extension")
    logger.addHandler(handler)
    try:
        app = host_app()
        Chat(app)
    finally:
        logger.removeHandler(handler)
    assert app.test_client().get("/").data == b"the host's own page"
    warned = [record.getMessage() for record in records if record.levelno == logging.WARNING]
    assert len(warned) == 1 and warned[0].startswith("the app serves / itself"), warned


def test_page_false_mounts_only_the_socket_the_health_check_and_the_api():
    """With page=False there is no page and no static files, while /healthz, the API and /ws are there."""
    app = host_app()
    Chat(app, url_prefix="/chat", page=False)
    client = app.test_client()
    assert client.get("/chat/").status_code == 404
    assert client.get("/chat/static/chat.js").status_code == 404
    assert client.get("/chat/healthz").status_code == 200
    assert client.get("/chat/api/rooms/lobby/presence").json == {"online": 0, "users": []}
    assert client.get("/chat/ws").status_code == 400


def test_settings_come_from_app_config_then_environment_then_defaults(monkeypatch):
    """app.config's CHAT_* wins over the environment, which wins over the defaults."""
    monkeypatch.setenv("CHAT_HISTORY_REPLAY", "7")
    monkeypatch.setenv("CHAT_HEARTBEAT_INTERVAL", "2")
    app = host_app(CHAT_HISTORY_REPLAY=3, CHAT_ANONYMOUS=False)
    Chat(app)
    settings = app.extensions["chat"].settings
    assert settings["HISTORY_REPLAY"] == 3
    assert settings["HEARTBEAT_INTERVAL"] == 2.0
    assert settings["ANONYMOUS"] is False
    assert settings["MAX_MESSAGE_BYTES"] == 65536


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CHAT_HISTORY_SIZE", -5),
        ("CHAT_ANONYMOUS", "maybe"),
        ("CHAT_API_KEY", "short"),
        ("CHAT_JWT_SECRET", "too-short-for-hs256"),
        ("CHAT_IDEMPOTENCY_TTL", "forever"),
    ],
)
def test_a_bad_app_config_value_names_its_key(key, value):
    """A bad CHAT_* value in app.config stops init_app with a message that names it."""
    with pytest.raises(ConfigError, match=key):
        Chat(host_app(**{key: value}))


def test_one_chat_per_app():
    """Mounting a second chat on the same app is refused at once."""
    app = host_app()
    Chat(app)
    with pytest.raises(RuntimeError, match="already has a chat"):
        Chat(app, url_prefix="/again")


def test_standalone_app_serves_the_page_at_the_root():
    """create_app() is the chat alone: the page at /, its socket at /ws, its files under /static."""
    html = create_app().test_client().get("/").data.decode()
    assert 'data-socket="/ws"' in html and 'src="/static/chat.js"' in html


def test_the_wheel_ships_the_page_and_its_files(tmp_path):
    """A wheel built from pyproject.toml holds the template and static files, and the installed package serves them."""
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file() and not name.startswith(("bench/", "tests/", "docs/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=source, check=True, capture_output=True, timeout=120,
    )
    wheel = next(tmp_path.glob("flask_chat_server-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"chat/web/templates/chat/index.html", "chat/web/static/chat.js", "chat/web/static/chat.css"} <= names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=120,
    )
    probe = (
        "import chat; from chat import create_app; "
        "assert chat.__file__.startswith(%r), chat.__file__; "
        "c = create_app().test_client(); "
        "assert b'chat.js' in c.get('/').data and c.get('/static/chat.js').status_code == 200"
    ) % str(target)
    finished = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""},
        capture_output=True, text=True, timeout=60,
    )
    assert finished.returncode == 0, finished.stderr

